//! Exact "serve as much as fits" for one group of loads: a bitset dynamic programme over watts.
//!
//! Each item can take any whole number of cells in `lo..=hi` (an on/off load has `lo == hi`) or
//! nothing. [`best_subset`] finds the largest reachable total not above the capacity and, among the
//! subsets reaching it, the one that includes items earliest in the given priority order.
//! Work is `O(items × capacity / 64 × log(width))` word operations; the caller bounds it.

/// One item, in cells (a cell is the caller's resolution in watts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item {
    pub lo: usize,
    pub hi: usize,
}

/// Fixed-length bitset over `0..=cap`.
#[derive(Clone)]
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    fn set(&mut self, i: usize) {
        if i < self.len {
            self.words[i / 64] |= 1 << (i % 64);
        }
    }

    fn trim(&mut self) {
        let extra = self.words.len() * 64 - self.len;
        if extra > 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= u64::MAX >> extra;
        }
    }

    /// `self |= other << shift`.
    fn or_shifted(&mut self, other: &Bits, shift: usize) {
        let (ws, bs) = (shift / 64, shift % 64);
        let n = self.words.len();
        for i in (ws..n).rev() {
            let src = i - ws;
            let mut v = other.words[src] << bs;
            if bs > 0 && src > 0 {
                v |= other.words[src - 1] >> (64 - bs);
            }
            self.words[i] |= v;
        }
        self.trim();
    }

    /// Any bit set in `a..=b`?
    fn any_in(&self, a: usize, b: usize) -> bool {
        if a > b || a >= self.len {
            return false;
        }
        let b = b.min(self.len - 1);
        let (wa, wb) = (a / 64, b / 64);
        for w in wa..=wb {
            let mut v = self.words[w];
            if w == wa {
                v &= u64::MAX << (a % 64);
            }
            if w == wb {
                let top = b % 64;
                if top < 63 {
                    v &= (1u64 << (top + 1)) - 1;
                }
            }
            if v != 0 {
                return true;
            }
        }
        false
    }

    fn highest(&self) -> Option<usize> {
        self.words
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i * 64 + 63 - w.leading_zeros() as usize)
    }
}

/// Estimated word operations of [`best_subset`], for the caller's work budget.
pub(crate) fn work(items: &[Item], cap: usize) -> u64 {
    let words = (cap / 64 + 1) as u64;
    items
        .iter()
        .map(|it| {
            let width = it.hi.saturating_sub(it.lo) as u64 + 1;
            words * (2 + u64::from(64 - width.leading_zeros()))
        })
        .sum()
}

/// The largest total `<= cap` reachable by a subset, and the chosen subset: items are taken in
/// the given order whenever the target can still be reached with them.
pub(crate) fn best_subset(items: &[Item], cap: usize) -> (usize, Vec<bool>) {
    let len = cap + 1;
    // suffix[i]: totals reachable with items i.. ; suffix[n] = {0}.
    let mut suffix = Vec::with_capacity(items.len() + 1);
    let mut last = Bits::new(len);
    last.set(0);
    suffix.push(last.clone());
    for item in items.iter().rev() {
        let mut next = last.clone();
        if item.lo <= cap {
            let mut smeared = Bits::new(len);
            smeared.or_shifted(&last, item.lo);
            // OR over shifts 0..=width by doubling.
            let width = item.hi.min(cap).saturating_sub(item.lo);
            let mut span = 1usize;
            while span <= width {
                let step = span.min(width + 1 - span);
                let copy = smeared.clone();
                smeared.or_shifted(&copy, step);
                span += step;
            }
            for (n, s) in next.words.iter_mut().zip(&smeared.words) {
                *n |= *s;
            }
        }
        suffix.push(next.clone());
        last = next;
    }
    suffix.reverse();
    let best = suffix[0].highest().unwrap_or(0);
    let mut chosen = vec![false; items.len()];
    let (mut a, mut b) = (best, best);
    for (i, item) in items.iter().enumerate() {
        if item.lo > b {
            continue;
        }
        let na = a.saturating_sub(item.hi);
        let nb = b - item.lo;
        if suffix[i + 1].any_in(na, nb) {
            chosen[i] = true;
            a = na;
            b = nb;
        }
    }
    (best, chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(items: &[Item], cap: usize) -> usize {
        let mut best = 0;
        for mask in 0u32..(1 << items.len()) {
            let (mut lo, mut hi) = (0, 0);
            for (i, it) in items.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    lo += it.lo;
                    hi += it.hi;
                }
            }
            if lo <= cap {
                best = best.max(hi.min(cap));
            }
        }
        best
    }

    #[test]
    fn finds_the_best_total_of_plugs_and_ranges() {
        let items = [
            Item { lo: 70, hi: 70 },
            Item { lo: 30, hi: 30 },
            Item { lo: 45, hi: 45 },
            Item { lo: 10, hi: 25 },
        ];
        for cap in [0, 5, 29, 50, 99, 101, 140, 200] {
            let (best, chosen) = best_subset(&items, cap);
            assert_eq!(best, brute(&items, cap), "cap {cap}");
            let lo: usize = items
                .iter()
                .zip(&chosen)
                .filter(|p| *p.1)
                .map(|p| p.0.lo)
                .sum();
            let hi: usize = items
                .iter()
                .zip(&chosen)
                .filter(|p| *p.1)
                .map(|p| p.0.hi)
                .sum();
            assert!(lo <= best && best <= hi, "cap {cap}: {lo}..{hi} vs {best}");
        }
    }

    #[test]
    fn prefers_items_earlier_in_the_order_among_equal_totals() {
        let items = [Item { lo: 5, hi: 5 }; 4];
        let (best, chosen) = best_subset(&items, 12);
        assert_eq!(best, 10);
        assert_eq!(chosen, vec![true, true, false, false]);
    }

    #[test]
    fn works_across_word_boundaries() {
        let items = [Item { lo: 63, hi: 63 }, Item { lo: 65, hi: 130 }];
        let (best, _) = best_subset(&items, 150);
        assert_eq!(best, brute(&items, 150));
        let (best, _) = best_subset(&items, 64);
        assert_eq!(best, 63);
    }
}
