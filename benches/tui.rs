//! TUI frame time on a 10,000-node model (ratatui TestBackend): the budget is 16 ms a frame.
//!
//! `static`: redraw with nothing changed; `moving`: the cursor moves every frame, so the
//! details pane and the neighbourhood graph are rebuilt each time (the worst common case).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use crossterm::event::{KeyCode, KeyEvent};
use pare::jobs::NoProgress;
use pare::model::builder::zoo;
use pare::model::{Analysis, InputPins, Model};
use pare::tags::Tags;
use pare::tui::{App, KeyMap, Session, ui};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn app_10k() -> App {
    let proto = zoo::deep_narrow(10_000);
    let model = Model::in_memory(proto);
    let a = Analysis::new(model, &InputPins::new()).expect("deep_narrow analyses");
    let s = Session::build(a, Tags::default(), None, &NoProgress).expect("session");
    let mut app = App::new(s, KeyMap::default_map());
    // Open the whole first stage and park the cursor deep inside it.
    app.handle_key(KeyEvent::from(KeyCode::Char('E')));
    for _ in 0..40 {
        app.handle_key(KeyEvent::from(KeyCode::Char('j')));
    }
    app
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tui_frame_10k_nodes");
    for (w, h) in [(200u16, 50u16), (80, 24)] {
        let mut app = app_10k();
        let mut term = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        g.bench_function(format!("static_{w}x{h}"), |b| {
            b.iter(|| {
                term.draw(|f| ui::draw(&mut app, f)).expect("draw");
                app.tick();
                black_box(&app);
            })
        });
        let mut down = true;
        g.bench_function(format!("moving_{w}x{h}"), |b| {
            b.iter(|| {
                app.handle_key(KeyEvent::from(if down {
                    KeyCode::Char('j')
                } else {
                    KeyCode::Char('k')
                }));
                down = !down;
                term.draw(|f| ui::draw(&mut app, f)).expect("draw");
                app.tick();
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
