//! The skip/lock tags file shared by the CLI and the TUI.
//!
//! ```toml
//! skip = ["/layer1/0/conv1/Conv", "/aspp/*"]   # never a pruning target
//! lock = ["/classifier/*"]                      # none of its channels change
//! [ratio]
//! "/layer4/*" = 0.3                             # per-layer ratio override
//! ```
//! Patterns are node names with `*` and `?` globs. A pattern that names no node is an error
//! listing the closest names, because a typo silently pruning a layer the user meant to keep
//! is exactly the failure this file exists to prevent (seed P8).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{PareError, Result, UnknownName};

/// Tags as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tags {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lock: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ratio: BTreeMap<String, f64>,
}

/// What a node is tagged with, after matching patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    Skip,
    Lock,
}

impl Tags {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => PareError::NotFound {
                path: path.to_path_buf(),
            },
            _ => PareError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let tags: Tags = toml::from_str(&text).map_err(|e| PareError::BadTags {
            path: path.to_path_buf(),
            message: format!("not a valid tags file: {}", e.message()),
        })?;
        for (p, r) in &tags.ratio {
            if !(0.0..1.0).contains(r) {
                return Err(PareError::BadTags {
                    path: path.to_path_buf(),
                    message: format!("ratio for '{p}' is {r}; it must be in [0, 1)"),
                });
            }
        }
        Ok(tags)
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)
            .map_err(|e| PareError::Usage(format!("cannot encode tags: {e}")))?;
        let header = "# pare tags: skip = never a pruning target, lock = channels never change\n";
        crate::model::io::write_atomic(path, format!("{header}{text}").as_bytes())
    }

    pub fn is_empty(&self) -> bool {
        self.skip.is_empty() && self.lock.is_empty() && self.ratio.is_empty()
    }

    /// The tag of a node (lock wins over skip).
    pub fn tag_of(&self, node: &str) -> Option<Tag> {
        if self.lock.iter().any(|p| glob_match(p, node)) {
            Some(Tag::Lock)
        } else if self.skip.iter().any(|p| glob_match(p, node)) {
            Some(Tag::Skip)
        } else {
            None
        }
    }

    /// Ratio override for a node (the most specific = longest matching pattern wins).
    pub fn ratio_of(&self, node: &str) -> Option<f64> {
        self.ratio
            .iter()
            .filter(|(p, _)| glob_match(p, node))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, r)| *r)
    }

    /// Sets or clears a node's tag (exact name), as the TUI does.
    pub fn set(&mut self, node: &str, tag: Option<Tag>) {
        self.skip.retain(|p| p != node);
        self.lock.retain(|p| p != node);
        match tag {
            Some(Tag::Skip) => self.skip.push(node.to_string()),
            Some(Tag::Lock) => self.lock.push(node.to_string()),
            None => {}
        }
    }

    /// Errors for every pattern that matches no node, naming the closest node names.
    pub fn check_against(&self, nodes: &[&str]) -> Result<()> {
        let mut names = Vec::new();
        for p in self.skip.iter().chain(&self.lock).chain(self.ratio.keys()) {
            if !nodes.iter().any(|n| glob_match(p, n)) {
                names.push(UnknownName {
                    name: p.clone(),
                    closest: nearest(p, nodes, 3),
                });
            }
        }
        if names.is_empty() {
            Ok(())
        } else {
            Err(PareError::UnknownNames {
                what: "tags name no layer of the model".into(),
                names,
            })
        }
    }
}

/// `*` matches any run of characters (including `/`), `?` one character. Iterative.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Levenshtein distance (two rows).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The `n` names closest to `query` by edit distance, quoted for a message.
pub fn closest(query: &str, names: &[&str], n: usize) -> Vec<String> {
    nearest(query, names, n)
        .into_iter()
        .map(|s| format!("'{s}'"))
        .collect()
}

/// The `n` names closest to `query` by edit distance.
pub fn nearest(query: &str, names: &[&str], n: usize) -> Vec<String> {
    let mut v: Vec<(usize, &str)> = names
        .iter()
        .map(|s| (edit_distance(query, s), *s))
        .collect();
    v.sort();
    v.into_iter().take(n).map(|(_, s)| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("/layer1/*", "/layer1/0/conv1/Conv"));
        assert!(glob_match("*conv?/Conv", "/layer1/0/conv1/Conv"));
        assert!(!glob_match("/layer2/*", "/layer1/0/conv1/Conv"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn closest_names() {
        let names = ["/layer1/conv1", "/layer1/conv2", "/head/fc"];
        assert_eq!(
            closest("/layer1/conv3", &names, 1),
            vec!["'/layer1/conv1'".to_string()]
        );
        let t = Tags {
            skip: vec!["/layer1/conv3".into()],
            ..Default::default()
        };
        let err = t.check_against(&names).expect_err("no match");
        let e = err.to_string();
        assert!(
            e.contains("'/layer1/conv3' (closest: '/layer1/conv1'"),
            "{e}"
        );
        // Front ends get the names, not just a message.
        let PareError::UnknownNames { names: unknown, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(unknown[0].name, "/layer1/conv3");
        assert_eq!(unknown[0].closest[0], "/layer1/conv1");
    }

    #[test]
    fn bad_tags_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("pare-tags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "skip = 3").expect("write");
        let err = Tags::load(&bad).expect_err("not a tags file");
        assert!(
            matches!(&err, PareError::BadTags { path, .. } if path == &bad),
            "{err:?}"
        );
        std::fs::write(&bad, "[ratio]\n\"/a\" = 1.5").expect("write");
        let err = Tags::load(&bad).expect_err("ratio out of range");
        assert!(err.to_string().contains("must be in [0, 1)"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
