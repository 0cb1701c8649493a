//! Symbolic dimension arithmetic.
//!
//! A dynamic model declares dims such as `batch` or `height`, and shape arithmetic combines
//! them (`height/2`, `batch*3`, `height+2-3`). Keeping these symbolic — instead of collapsing
//! to "unknown" at the first operation — is what lets a Reshape whose target was computed from
//! `Shape` keep its rank and batch dim without pins.
//!
//! Internally a symbolic dim is a polynomial with integer coefficients over *atoms*: the
//! user's dim_params plus opaque floor-division terms such as `(height+1)/2`. [`Dim::Sym`] only
//! holds a string, so every composite expression this module renders is remembered in a
//! [`SymTable`] and parsed back from it; a string not in the table is an atom. Rendering is
//! canonical (terms sorted), so two equal expressions give equal strings and `Dim` equality
//! keeps meaning "same size".

use std::collections::{BTreeMap, HashMap};

use super::Dim;

/// Sorted atom names; the empty monomial is the constant term.
type Monomial = Vec<String>;

/// Beyond this many terms an expression is not worth keeping: it becomes `Unknown`.
const MAX_TERMS: usize = 12;

/// An integer polynomial over atoms.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Poly(BTreeMap<Monomial, i64>);

impl Poly {
    pub fn constant(c: i64) -> Self {
        let mut m = BTreeMap::new();
        if c != 0 {
            m.insert(Vec::new(), c);
        }
        Poly(m)
    }

    pub fn atom(name: &str) -> Self {
        let mut m = BTreeMap::new();
        m.insert(vec![name.to_string()], 1);
        Poly(m)
    }

    /// The value when the polynomial is a constant.
    pub fn as_const(&self) -> Option<i64> {
        match self.0.len() {
            0 => Some(0),
            1 => self.0.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    fn const_term(&self) -> i64 {
        self.0.get(&Vec::new()).copied().unwrap_or(0)
    }

    fn add_term(&mut self, m: Monomial, c: i64) {
        let e = self.0.entry(m).or_insert(0);
        *e = e.wrapping_add(c);
        if *e == 0 {
            self.0.retain(|_, v| *v != 0);
        }
    }

    pub fn add(&self, o: &Poly) -> Poly {
        let mut r = self.clone();
        for (m, c) in &o.0 {
            r.add_term(m.clone(), *c);
        }
        r
    }

    pub fn scale(&self, k: i64) -> Poly {
        if k == 0 {
            return Poly::default();
        }
        Poly(
            self.0
                .iter()
                .map(|(m, c)| (m.clone(), c.wrapping_mul(k)))
                .collect(),
        )
    }

    pub fn sub(&self, o: &Poly) -> Poly {
        self.add(&o.scale(-1))
    }

    pub fn mul(&self, o: &Poly) -> Option<Poly> {
        if self.0.len() * o.0.len() > MAX_TERMS * 4 {
            return None;
        }
        let mut r = Poly::default();
        for (ma, ca) in &self.0 {
            for (mb, cb) in &o.0 {
                let mut m: Monomial = ma.iter().chain(mb.iter()).cloned().collect();
                m.sort();
                r.add_term(m, ca.wrapping_mul(*cb));
            }
        }
        (r.0.len() <= MAX_TERMS).then_some(r)
    }

    /// Exact division by a single-term polynomial (`c * atoms`), when every term divides.
    pub fn div_exact(&self, d: &Poly) -> Option<Poly> {
        if d.0.len() != 1 {
            return None;
        }
        let (dm, dc) = d.0.iter().next()?;
        if *dc == 0 {
            return None;
        }
        let mut r = Poly::default();
        for (m, c) in &self.0 {
            if c % dc != 0 {
                return None;
            }
            let mut rest = m.clone();
            for a in dm {
                let pos = rest.iter().position(|x| x == a)?;
                rest.remove(pos);
            }
            r.add_term(rest, c / dc);
        }
        Some(r)
    }

    /// Splits `self = c*q + r` with every coefficient of `r` in `[0, c)`.
    fn div_rem(&self, c: i64) -> (Poly, Poly) {
        let mut q = Poly::default();
        let mut r = Poly::default();
        for (m, k) in &self.0 {
            q.add_term(m.clone(), k.div_euclid(c));
            r.add_term(m.clone(), k.rem_euclid(c));
        }
        (q, r)
    }

    /// The single atom of `self - constant` when that is exactly one atom with coefficient 1.
    fn single_atom(&self) -> Option<&str> {
        let mut it = self.0.iter().filter(|(m, _)| !m.is_empty());
        let (m, c) = it.next()?;
        (it.next().is_none() && *c == 1 && m.len() == 1).then(|| m[0].as_str())
    }

    /// Canonical text: non-constant terms in order, then the constant (`2*h+w-1`).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let push = |s: &mut String, c: i64, body: &str| {
            if s.is_empty() {
                if c < 0 {
                    s.push('-');
                }
            } else {
                s.push(if c < 0 { '-' } else { '+' });
            }
            let a = c.unsigned_abs();
            if body.is_empty() {
                s.push_str(&a.to_string());
            } else {
                if a != 1 {
                    s.push_str(&a.to_string());
                    s.push('*');
                }
                s.push_str(body);
            }
        };
        for (m, c) in self.0.iter().filter(|(m, _)| !m.is_empty()) {
            push(&mut s, *c, &m.join("*"));
        }
        let k = self.const_term();
        if k != 0 || s.is_empty() {
            push(&mut s, k, "");
        }
        s
    }
}

/// Remembers the polynomial behind every symbolic dim string produced during one inference.
#[derive(Debug, Default)]
pub struct SymTable {
    polys: HashMap<String, Poly>,
    /// Floor-division atoms: `"(h+1)/2"` → (`h+1`, 2).
    fdivs: HashMap<String, (Poly, i64)>,
}

impl SymTable {
    /// `floor(p / c)` for `c > 0`, assuming atoms are non-negative integers. A remainder that
    /// is a pure constant in `[0, c)` floors away; anything else becomes an opaque `(r)/c`
    /// atom. Nested divisions fold: `floor((floor(q/a) + b) / c) == floor((q + a*b) / (a*c))`,
    /// so two stride-2 convs on `h` give `(h+3)/4`, not `((h+1)/2+1)/2`.
    pub fn floor_div_poly(&mut self, p: &Poly, c: i64) -> Poly {
        if c == 1 {
            return p.clone();
        }
        if let Some(atom) = p.single_atom()
            && let Some((q, a)) = self.fdivs.get(atom).cloned()
            && let Some(ac) = a.checked_mul(c)
        {
            let b = p.const_term();
            return self.floor_div_poly(&q.add(&Poly::constant(a.wrapping_mul(b))), ac);
        }
        let (q, r) = p.div_rem(c);
        if r.as_const().is_some() {
            // 0 <= r < c, so floor(r / c) == 0.
            return q;
        }
        let inner = r.render();
        let atom =
            if r.single_atom().is_some() && r.const_term() == 0 && !inner.contains(['*', '/']) {
                format!("{inner}/{c}")
            } else {
                format!("({inner})/{c}")
            };
        self.fdivs.entry(atom.clone()).or_insert((r, c));
        q.add(&Poly::atom(&atom))
    }

    /// The polynomial of a dim; `None` for `Unknown`.
    pub fn poly(&self, d: &Dim) -> Option<Poly> {
        match d {
            Dim::Known(v) => Some(Poly::constant(*v)),
            Dim::Sym(s) => Some(self.polys.get(s).cloned().unwrap_or_else(|| Poly::atom(s))),
            Dim::Unknown => None,
        }
    }

    /// The dim for a polynomial: a constant becomes `Known`, anything else a remembered `Sym`.
    pub fn dim(&mut self, p: Poly) -> Dim {
        if let Some(c) = p.as_const() {
            return Dim::Known(c);
        }
        if p.0.len() > MAX_TERMS {
            return Dim::Unknown;
        }
        let s = p.render();
        let is_atom = p.0.len() == 1 && p.0.iter().all(|(m, c)| m.len() == 1 && *c == 1);
        if !is_atom {
            self.polys.entry(s.clone()).or_insert(p);
        }
        Dim::Sym(s)
    }

    fn bin(&mut self, a: &Dim, b: &Dim, f: impl Fn(&Poly, &Poly) -> Option<Poly>) -> Dim {
        match (self.poly(a), self.poly(b)) {
            (Some(pa), Some(pb)) => match f(&pa, &pb) {
                Some(p) => self.dim(p),
                None => Dim::Unknown,
            },
            _ => Dim::Unknown,
        }
    }

    pub fn add(&mut self, a: &Dim, b: &Dim) -> Dim {
        if let (Dim::Known(x), Dim::Known(y)) = (a, b) {
            return Dim::Known(x.wrapping_add(*y));
        }
        self.bin(a, b, |x, y| Some(x.add(y)))
    }

    pub fn sub(&mut self, a: &Dim, b: &Dim) -> Dim {
        if let (Dim::Known(x), Dim::Known(y)) = (a, b) {
            return Dim::Known(x.wrapping_sub(*y));
        }
        self.bin(a, b, |x, y| Some(x.sub(y)))
    }

    pub fn mul(&mut self, a: &Dim, b: &Dim) -> Dim {
        match (a, b) {
            (Dim::Known(x), Dim::Known(y)) => Dim::Known(x.wrapping_mul(*y)),
            (Dim::Known(0), _) | (_, Dim::Known(0)) => Dim::Known(0),
            _ => self.bin(a, b, |x, y| x.mul(y)),
        }
    }

    /// Integer division as ONNX `Div` does it on int tensors (truncation; the same as floor
    /// for the non-negative sizes shape arithmetic handles). A symbolic divisor only divides
    /// exactly.
    pub fn div(&mut self, a: &Dim, b: &Dim) -> Dim {
        match (a, b) {
            (_, Dim::Known(0)) => Dim::Unknown,
            (Dim::Known(x), Dim::Known(y)) => Dim::Known(x.wrapping_div(*y)),
            (_, Dim::Known(y)) if *y > 0 => match self.poly(a) {
                Some(p) => {
                    let f = self.floor_div_poly(&p, *y);
                    self.dim(f)
                }
                None => Dim::Unknown,
            },
            _ => self.bin(a, b, |x, y| x.div_exact(y)),
        }
    }

    /// `floor(a / c)` for a constant `c > 0`.
    pub fn floor_div_c(&mut self, a: &Dim, c: i64) -> Dim {
        if c <= 0 {
            return Dim::Unknown;
        }
        match a {
            Dim::Known(x) => Dim::Known(x.div_euclid(c)),
            _ => match self.poly(a) {
                Some(p) => {
                    let f = self.floor_div_poly(&p, c);
                    self.dim(f)
                }
                None => Dim::Unknown,
            },
        }
    }

    /// `ceil(a / c)` for a constant `c > 0`.
    pub fn ceil_div_c(&mut self, a: &Dim, c: i64) -> Dim {
        if c <= 0 {
            return Dim::Unknown;
        }
        match a {
            Dim::Known(x) => Dim::Known(x.wrapping_neg().div_euclid(c).wrapping_neg()),
            _ => match self.poly(a) {
                Some(p) => {
                    let f = self.floor_div_poly(&p.add(&Poly::constant(c - 1)), c);
                    self.dim(f)
                }
                None => Dim::Unknown,
            },
        }
    }

    pub fn add_c(&mut self, a: &Dim, c: i64) -> Dim {
        self.add(a, &Dim::Known(c))
    }

    pub fn mul_c(&mut self, a: &Dim, c: i64) -> Dim {
        self.mul(a, &Dim::Known(c))
    }

    /// `a - b` when it is a constant (the two differ by a known amount).
    pub fn const_diff(&self, a: &Dim, b: &Dim) -> Option<i64> {
        if let (Dim::Known(x), Dim::Known(y)) = (a, b) {
            return x.checked_sub(*y);
        }
        self.poly(a)?.sub(&self.poly(b)?).as_const()
    }

    /// Ordering of two dims when it is decidable.
    pub fn cmp(&self, a: &Dim, b: &Dim) -> Option<std::cmp::Ordering> {
        self.const_diff(a, b).map(|d| d.cmp(&0))
    }

    pub fn max(&mut self, a: &Dim, b: &Dim) -> Dim {
        match self.cmp(a, b) {
            Some(std::cmp::Ordering::Less) => b.clone(),
            Some(_) => a.clone(),
            None => Dim::Unknown,
        }
    }

    pub fn min(&mut self, a: &Dim, b: &Dim) -> Dim {
        match self.cmp(a, b) {
            Some(std::cmp::Ordering::Greater) => b.clone(),
            Some(_) => a.clone(),
            None => Dim::Unknown,
        }
    }

    /// Product of dims (`Known(1)` for none).
    pub fn product<'a>(&mut self, dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
        let mut acc = Dim::Known(1);
        for d in dims {
            acc = self.mul(&acc, d);
            if acc == Dim::Unknown {
                break;
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Dim {
        Dim::Sym(x.into())
    }

    #[test]
    fn conv_like_expression_simplifies() {
        let mut t = SymTable::default();
        // (h + 2 - 3) / 2 + 1 == (h + 1) / 2
        let h = s("h");
        let a = t.add_c(&h, 2 - 3);
        let a = t.floor_div_c(&a, 2);
        let a = t.add_c(&a, 1);
        assert_eq!(a, s("(h+1)/2"));
        // stride 1, pad 1, kernel 3: h stays h.
        let b = t.add_c(&h, 2 - 3);
        let b = t.floor_div_c(&b, 1);
        let b = t.add_c(&b, 1);
        assert_eq!(b, h);
        // Two stride-2 convs fold into one division.
        let c = t.add_c(&a, -1);
        let c = t.floor_div_c(&c, 2);
        let c = t.add_c(&c, 1);
        assert_eq!(c, s("(h+3)/4"));
        // 2*h / 2 == h
        let d = t.mul_c(&h, 2);
        assert_eq!(d, s("2*h"));
        assert_eq!(t.floor_div_c(&d, 2), h);
    }

    #[test]
    fn products_divide_back() {
        let mut t = SymTable::default();
        let hw = t.mul(&s("h"), &s("w"));
        assert_eq!(hw, s("h*w"));
        let n = t.product([&s("b"), &Dim::Known(3), &s("h"), &s("w")]);
        let d = t.mul(&s("b"), &Dim::Known(3));
        assert_eq!(t.div(&n, &d), hw);
        assert_eq!(t.const_diff(&hw, &s("h")), None);
        assert_eq!(t.div(&hw, &s("h")), s("w"));
    }

    #[test]
    fn ceil_and_compare() {
        let mut t = SymTable::default();
        let h = s("h");
        assert_eq!(t.ceil_div_c(&Dim::Known(7), 2), Dim::Known(4));
        assert_eq!(t.ceil_div_c(&Dim::Known(-7), 2), Dim::Known(-3));
        let c = t.ceil_div_c(&h, 2);
        assert_eq!(c, s("(h+1)/2"));
        let h1 = t.add_c(&h, 1);
        assert_eq!(t.cmp(&h1, &h), Some(std::cmp::Ordering::Greater));
        assert_eq!(t.max(&h1, &h), h1);
        assert_eq!(t.sub(&h1, &h), Dim::Known(1));
    }
}
