//! Pages of query replies, so that no reply grows with the log past what
//! NATS carries (1 MB by default).
//!
//! A page holds at most `limit` items and stops before its items pass
//! [`PAGE_BYTES`] (the caller measures them: the planner as JSON, which is
//! never smaller than the MessagePack the CLI uses); it always holds at
//! least one item, so paging always moves on. The cursor is how many items
//! the pages so far held.

/// Items per page when the query gives no `limit`.
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` a query may give; more is read as this.
pub const MAX_LIMIT: u32 = 1_000;
/// Bytes of items in one page, well under NATS's default payload limit
/// of 1 MB.
pub const PAGE_BYTES: usize = 256 * 1024;
/// Bytes of one service in a status reply; past it its lists are cut,
/// with a marker saying what was left out.
pub const SERVICE_BYTES: usize = 64 * 1024;

/// The page of `items` after the first `after`: at most `limit` (default
/// [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) and under [`PAGE_BYTES`]
/// (at least one item), each item weighing `size` bytes. Returns the page
/// and, when items remain, the cursor to ask for the next one with.
pub fn page<T: Clone>(
    items: &[T],
    after: Option<u64>,
    limit: Option<u32>,
    size: impl Fn(&T) -> usize,
) -> (Vec<T>, Option<u64>) {
    page_within(items, after, limit, PAGE_BYTES, size)
}

fn page_within<T: Clone>(
    items: &[T],
    after: Option<u64>,
    limit: Option<u32>,
    budget: usize,
    size: impl Fn(&T) -> usize,
) -> (Vec<T>, Option<u64>) {
    let start = usize::try_from(after.unwrap_or(0))
        .unwrap_or(usize::MAX)
        .min(items.len());
    let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in items[start..].iter().take(limit) {
        let weight = size(item);
        if !out.is_empty() && bytes.saturating_add(weight) > budget {
            break;
        }
        bytes = bytes.saturating_add(weight);
        out.push(item.clone());
    }
    let end = start + out.len();
    let next = (end < items.len()).then_some(end as u64);
    (out, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_each_other_until_every_item_was_given() {
        let items: Vec<u32> = (0..2_500).collect();
        let one = |_: &u32| 1;
        let (first, next) = page(&items, None, None, one);
        assert_eq!(first, (0..100).collect::<Vec<_>>());
        assert_eq!(next, Some(100));
        let (second, next) = page(&items, next, Some(120), one);
        assert_eq!(second, (100..220).collect::<Vec<_>>());
        let (third, next) = page(&items, next, Some(5_000), one);
        assert_eq!(third, (220..1_220).collect::<Vec<_>>(), "at most 1000");
        let (_, next) = page(&items, next, Some(1_000), one);
        let (last, next) = page(&items, next, Some(1_000), one);
        assert_eq!(last, (2_220..2_500).collect::<Vec<_>>());
        assert_eq!(next, None);
        let (past, next) = page(&items, Some(9_999), None, one);
        assert!(past.is_empty() && next.is_none());
    }

    #[test]
    fn a_page_stops_before_its_byte_budget_and_always_moves_on() {
        let items = vec!["x".repeat(12); 10];
        let len = |s: &String| s.len();
        let (p, next) = page_within(&items, None, None, 40, len);
        assert_eq!((p.len(), next), (3, Some(3)));
        // One item over the budget still makes a page of one.
        let (p, next) = page_within(&items, Some(3), None, 5, len);
        assert_eq!((p.len(), next), (1, Some(4)));
        // A limit of 0 is read as 1.
        let (p, _) = page_within(&items, None, Some(0), 1_000, len);
        assert_eq!(p.len(), 1);
    }
}
