//! Regenerates `assets/demo.onnx`, the model `pare` opens when given none.
//!
//!     cargo run --example make_demo

fn main() -> anyhow::Result<()> {
    let model = pare::demo::build_demo();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.onnx");
    pare::model::io::write_atomic(&path, &pare::model::io::encode_model(&model))?;
    println!("wrote {}", path.display());
    Ok(())
}
