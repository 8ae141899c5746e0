//! Exact "serve as much as fits" for one group of loads: a bitset dynamic programme over watts.
//!
//! Each item can take any whole number of cells in `lo..=hi` (an on/off load has `lo == hi`) or
//! nothing. [`choose`] finds the largest reachable total not above the capacity and, among the
//! subsets reaching it, the one that includes items earliest in the given priority order; when
//! items wait for their turn, it gives the first one its turn and favours the others within a
//! slack. Work is `O(items × capacity / 64 × log(width))` word operations; the caller bounds it
//! with [`work`]. Capacities are clamped to [`MAX_CELLS`].

/// Most cells a capacity may have, whatever the caller asks: bounds the memory of the bitsets
/// (2^24 cells are 2 MiB each) and keeps [`work`] far from overflowing.
pub(crate) const MAX_CELLS: usize = 1 << 24;

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
        self.highest_in(a, b).is_some()
    }

    /// Highest bit set in `a..=b`.
    fn highest_in(&self, a: usize, b: usize) -> Option<usize> {
        if a > b || a >= self.len {
            return None;
        }
        let b = b.min(self.len - 1);
        let (wa, wb) = (a / 64, b / 64);
        for w in (wa..=wb).rev() {
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
                return Some(w * 64 + 63 - v.leading_zeros() as usize);
            }
        }
        None
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

/// Estimated word operations of [`choose`], for the caller's work budget. Saturates instead of
/// overflowing, whatever the sizes.
pub(crate) fn work(items: &[Item], cap: usize) -> u64 {
    let words = u64::try_from(cap.min(MAX_CELLS) / 64)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    items.iter().fold(0u64, |sum, it| {
        let width = u64::try_from(it.hi.saturating_sub(it.lo))
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let steps = 2 + u64::from(64 - width.leading_zeros());
        sum.saturating_add(words.saturating_mul(steps))
    })
}

/// The largest total `<= cap` reachable by a subset, and the chosen subset: items are taken in
/// the given order whenever the target can still be reached with them.
#[cfg(test)]
pub(crate) fn best_subset(items: &[Item], cap: usize) -> (usize, Vec<bool>) {
    choose(items, cap, 0, 0.0)
}

/// Chooses a subset of `items`, given in preference order, whose total fits in `cap` (clamped
/// to [`MAX_CELLS`]); returns the largest total any subset reaches and the choice.
///
/// With `waiting == 0` the choice reaches that largest total, taking items in order whenever
/// the total can still be reached with them.
///
/// Otherwise `items[..waiting]` wait for their turn, longest first, and the choice:
/// 1. includes `items[0]` if it fits alone (the turn guarantee rests on this), which may cost up
///    to, but less than, the largest item: the total is then the largest reachable with it;
/// 2. takes the other waiting items in order whenever the total can still stay within `slack`
///    (a fraction, floored to whole cells) of the largest total, or of the total of step 1 when
///    that is lower;
/// 3. takes the remaining items in order to reach the largest total still reachable.
///
/// In every case the choice cannot be extended: no item left out fits in `cap` minus its total
/// at its minimum, so the total falls short of the largest by less than any item left out.
pub(crate) fn choose(items: &[Item], cap: usize, waiting: usize, slack: f64) -> (usize, Vec<bool>) {
    let cap = cap.min(MAX_CELLS);
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
    let waiting = waiting.min(items.len());
    // Invariant: `items[i..]` can reach a total in `a..=b`.
    let (mut a, mut b) = (best, best);
    if let Some(head) = items.first().filter(|it| waiting > 0 && it.lo <= cap) {
        let slack_cells = if slack > 0.0 {
            // Saturating cast; `slack` is at most 1 in effect.
            (best as f64 * slack.min(1.0)).floor() as usize
        } else {
            0
        };
        let rest = suffix[1].highest_in(0, cap - head.lo).unwrap_or(0);
        let with_head = rest + head.hi.min(cap - rest);
        a = best.saturating_sub(slack_cells).min(with_head);
    }
    for (i, item) in items.iter().enumerate() {
        if i == waiting && i > 0 {
            // The waiting items have had their turn: fill as much as is still reachable.
            b = suffix[i].highest_in(a, b).unwrap_or(b);
            a = b;
        }
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

    fn total(items: &[Item], chosen: &[bool]) -> usize {
        items
            .iter()
            .zip(chosen)
            .filter(|p| *p.1)
            .map(|p| p.0.hi)
            .sum()
    }

    #[test]
    fn the_first_waiting_item_has_its_turn_even_when_it_costs_power() {
        // 0.1 kW waiting beside 0.95 kW, 1 kW: alone it gives 100, the most is 950.
        let items = [Item { lo: 100, hi: 100 }, Item { lo: 950, hi: 950 }];
        let (best, chosen) = choose(&items, 1000, 1, 0.05);
        assert_eq!(best, 950);
        assert_eq!(chosen, vec![true, false]);
        // Not waiting, the most wins.
        assert_eq!(choose(&items, 1000, 0, 0.05).1, vec![false, true]);
    }

    #[test]
    fn other_waiting_items_are_taken_within_the_slack_only() {
        // Waiting 400 and 560, then 600; capacity 1000. With the 400 first, 600 fills exactly;
        // 400 + 560 = 960 is within 5 % of 1000 but not within 3 %.
        let items = [
            Item { lo: 400, hi: 400 },
            Item { lo: 560, hi: 560 },
            Item { lo: 600, hi: 600 },
        ];
        assert_eq!(choose(&items, 1000, 2, 0.05).1, vec![true, true, false]);
        assert_eq!(choose(&items, 1000, 2, 0.03).1, vec![true, false, true]);
    }

    #[test]
    fn after_the_waiting_items_the_rest_fills_as_much_as_it_can() {
        // Waiting 300 then 200, 450 and 500 after: 300 + 200 + 500 = 1000 fills, 300 + 200 + 450
        // would come first in order but fill less.
        let items = [
            Item { lo: 300, hi: 300 },
            Item { lo: 200, hi: 200 },
            Item { lo: 450, hi: 450 },
            Item { lo: 500, hi: 500 },
        ];
        let (best, chosen) = choose(&items, 1000, 2, 0.05);
        assert_eq!(best, 1000);
        assert_eq!(chosen, vec![true, true, false, true]);
        assert_eq!(total(&items, &chosen), 1000);
    }

    #[test]
    fn a_waiting_item_too_big_to_fit_gives_no_turn() {
        let items = [Item { lo: 2000, hi: 2000 }, Item { lo: 600, hi: 600 }];
        assert_eq!(choose(&items, 1000, 1, 0.05), (600, vec![false, true]));
    }

    #[test]
    fn choices_stay_within_the_capacity_and_the_promised_cost() {
        // Every small case: the choice fits, and falls short of the most by at most the larger of
        // the slack and (strictly) the largest item; the first waiting item is in if it fits.
        let sizes = [3, 5, 8, 13];
        for mask in 0u32..256 {
            let items: Vec<Item> = (0..4)
                .map(|i| {
                    let lo = sizes[((mask >> (2 * i)) & 3) as usize];
                    Item { lo, hi: lo + i % 2 }
                })
                .collect();
            for cap in 0..30 {
                for waiting in 0..3 {
                    let (best, chosen) = choose(&items, cap, waiting, 0.05);
                    assert_eq!(best, brute(&items, cap));
                    let lo: usize = items
                        .iter()
                        .zip(&chosen)
                        .filter(|p| *p.1)
                        .map(|p| p.0.lo)
                        .sum();
                    assert!(lo <= cap);
                    let got = total(&items, &chosen).min(cap);
                    let largest = items.iter().map(|i| i.hi).max().unwrap_or(0);
                    let slack = best * 5 / 100;
                    assert!(
                        got + slack.max(largest - 1) >= best,
                        "{items:?} cap {cap} waiting {waiting}: {got} of {best}"
                    );
                    // Cannot be extended: nothing left out fits in what is left.
                    for (it, c) in items.iter().zip(&chosen) {
                        assert!(
                            *c || got + it.lo > cap,
                            "{items:?} cap {cap} waiting {waiting}: {it:?} fits in {}",
                            cap - got
                        );
                    }
                    if waiting > 0 && items[0].lo <= cap {
                        assert!(chosen[0], "{items:?} cap {cap}");
                    }
                    if waiting == 0 {
                        assert!(got >= best, "{items:?} cap {cap}");
                    }
                }
            }
        }
    }

    #[test]
    fn work_of_huge_items_and_capacities_does_not_overflow() {
        // Regression: `hi - lo + 1` and `words × steps` overflowed (a panic in debug builds).
        let items = [Item {
            lo: 0,
            hi: usize::MAX,
        }; 3];
        let w = work(&items, usize::MAX);
        assert_eq!(w, work(&items, MAX_CELLS));
        assert!(w > 0);
    }

    #[test]
    fn a_huge_capacity_is_clamped_not_allocated() {
        let items = [Item { lo: 5, hi: 5 }, Item { lo: 7, hi: 9 }];
        assert_eq!(choose(&items, usize::MAX, 0, 0.0), (14, vec![true, true]));
        let big = [Item {
            lo: MAX_CELLS + 1,
            hi: MAX_CELLS + 1,
        }];
        assert_eq!(choose(&big, usize::MAX, 1, 0.05), (0, vec![false]));
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
