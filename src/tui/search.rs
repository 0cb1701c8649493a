//! Fuzzy search over node names, op types and tensor names.

use super::session::Session;

/// What a hit matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Name,
    Op,
    Tensor,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub node: usize,
    pub score: i64,
    pub field: Field,
    /// The matched text (a tensor name when `field` is Tensor).
    pub text: String,
}

const EXACT: i64 = 10_000;
const SUBSTRING: i64 = 5_000;

/// Scores `cand` against a lower-case `query`: subsequence match with bonuses for exact,
/// prefix, substring, consecutive and word-boundary matches. `None` when not a subsequence.
pub fn fuzzy_score(query: &str, cand: &str) -> Option<i64> {
    if query.is_empty() {
        return None;
    }
    let c = cand.to_lowercase();
    if c == query {
        return Some(EXACT);
    }
    let mut score: i64 = 0;
    if let Some(pos) = c.find(query) {
        // Any contiguous match outranks any scattered one.
        score += SUBSTRING - (pos as i64).min(100);
        let before = c[..pos].chars().last();
        if before.is_none_or(|b| matches!(b, '/' | '.' | '_' | ':' | '-')) {
            score += 100;
        }
        return Some(score - c.len() as i64 / 4);
    }
    let cc: Vec<char> = c.chars().collect();
    let mut ci = 0;
    let mut prev_match: Option<usize> = None;
    for q in query.chars() {
        let mut found = None;
        while ci < cc.len() {
            if cc[ci] == q {
                found = Some(ci);
                ci += 1;
                break;
            }
            ci += 1;
        }
        let at = found?;
        score += 10;
        if prev_match == Some(at.wrapping_sub(1)) {
            score += 15;
        }
        if at == 0 || matches!(cc[at - 1], '/' | '.' | '_' | ':' | '-') {
            score += 20;
        }
        prev_match = Some(at);
    }
    Some(score - cc.len() as i64 / 4)
}

/// Every node matching `query`, best first (ties in execution order).
pub fn search(s: &Session, query: &str) -> Vec<Hit> {
    let q = query.trim().to_lowercase();
    if q.is_empty() {
        return Vec::new();
    }
    let g = s.graph();
    let mut hits = Vec::new();
    for (i, n) in s.nodes.iter().enumerate() {
        let mut best: Option<Hit> = None;
        let mut consider = |score: Option<i64>, field: Field, text: &str| {
            if let Some(sc) = score
                && best.as_ref().is_none_or(|b| sc > b.score)
            {
                best = Some(Hit {
                    node: i,
                    score: sc,
                    field,
                    text: text.to_string(),
                });
            }
        };
        // An exact op name ("If", "conv") ranks above names that merely contain it.
        let op_score =
            fuzzy_score(&q, &n.op).map(|v| if v >= EXACT { EXACT + 2_000 } else { v - 40 });
        consider(op_score, Field::Op, &n.op);
        consider(fuzzy_score(&q, &n.name), Field::Name, &n.name);
        for t in g.node[i].output.iter().chain(g.node[i].input.iter()) {
            if t.is_empty() || s.analysis.index.initializers.contains_key(t) {
                continue;
            }
            consider(fuzzy_score(&q, t).map(|v| v - 30), Field::Tensor, t);
        }
        if let Some(h) = best {
            hits.push(h);
        }
    }
    hits.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then(s.nodes[a.node].topo.cmp(&s.nodes[b.node].topo))
    });
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_rank_sensibly() {
        assert_eq!(fuzzy_score("if", "If"), Some(EXACT));
        let exact_sub =
            fuzzy_score("feature.2.0/conv", "/feature/feature.2/feature.2.0/Conv").unwrap();
        let scattered =
            fuzzy_score("feature.2.0/conv", "/feature/feature.2/feature.2.0_1/Conv").unwrap();
        assert!(exact_sub > scattered);
        let sub = fuzzy_score("conv", "/layer1/conv1/Conv").unwrap();
        let fuzzy = fuzzy_score("cnv", "/layer1/conv1/Conv").unwrap();
        assert!(sub > fuzzy);
        assert!(fuzzy_score("xyz", "/layer1/conv1").is_none());
    }
}
