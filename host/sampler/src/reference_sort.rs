//! A descending sort of logits that orders equal values exactly like the reference's
//! `torch.sort(descending=True)` on CPU.
//!
//! torch sorts float rows with the C++ standard library's unstable `std::sort` (libstdc++
//! introsort on the reference's Linux builds): median-of-three quicksort down to chunks of 16,
//! heapsort past a depth limit, then one insertion sort. Ties come out in an order that depends on
//! that algorithm, and top-p filtering keeps or removes tied tokens by their rank — the fixtures
//! have a row where two equal maxima compete for a single slot. So this module follows the same
//! algorithm step by step (written from its published description, comparisons and moves in the
//! same order), with torch's descending comparator: NaN first, then larger values.

/// Sorts `(value, index)` pairs by descending value, ties in libstdc++ `std::sort` order.
pub(crate) fn sort_descending_like_torch(items: &mut [(f32, usize)]) {
    if items.len() > 1 {
        let depth_limit = 2 * floor_log2(items.len());
        introsort_loop(items, 0, items.len(), depth_limit);
        final_insertion_sort(items, 0, items.len());
    }
}

/// torch's `KeyValueCompDesc`: `a` goes before `b`.
fn before(a: f32, b: f32) -> bool {
    (a.is_nan() && !b.is_nan()) || a > b
}

const THRESHOLD: usize = 16;

fn floor_log2(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

fn introsort_loop(
    items: &mut [(f32, usize)],
    first: usize,
    mut last: usize,
    mut depth_limit: usize,
) {
    while last - first > THRESHOLD {
        if depth_limit == 0 {
            heap_sort(&mut items[first..last]);
            return;
        }
        depth_limit -= 1;
        let cut = partition_around_median(items, first, last);
        introsort_loop(items, cut, last, depth_limit);
        last = cut;
    }
}

fn partition_around_median(items: &mut [(f32, usize)], first: usize, last: usize) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(items, first, first + 1, mid, last - 1);
    unguarded_partition(items, first + 1, last, first)
}

fn move_median_to_first(items: &mut [(f32, usize)], result: usize, a: usize, b: usize, c: usize) {
    let (va, vb, vc) = (items[a].0, items[b].0, items[c].0);
    let median = if before(va, vb) {
        if before(vb, vc) {
            b
        } else if before(va, vc) {
            c
        } else {
            a
        }
    } else if before(va, vc) {
        a
    } else if before(vb, vc) {
        c
    } else {
        b
    };
    items.swap(result, median);
}

fn unguarded_partition(
    items: &mut [(f32, usize)],
    mut first: usize,
    mut last: usize,
    pivot: usize,
) -> usize {
    let pivot_value = items[pivot].0;
    loop {
        // The pivot sits outside [first, last) and is a median, so both scans stop in bounds;
        // `before` is a strict weak order on every f32, NaN included.
        while before(items[first].0, pivot_value) {
            first += 1;
        }
        last -= 1;
        while before(pivot_value, items[last].0) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        items.swap(first, last);
        first += 1;
    }
}

fn final_insertion_sort(items: &mut [(f32, usize)], first: usize, last: usize) {
    if last - first > THRESHOLD {
        insertion_sort(items, first, first + THRESHOLD);
        for i in first + THRESHOLD..last {
            unguarded_linear_insert(items, i);
        }
    } else {
        insertion_sort(items, first, last);
    }
}

fn insertion_sort(items: &mut [(f32, usize)], first: usize, last: usize) {
    if first == last {
        return;
    }
    for i in first + 1..last {
        if before(items[i].0, items[first].0) {
            let value = items[i];
            items.copy_within(first..i, first + 1);
            items[first] = value;
        } else {
            unguarded_linear_insert(items, i);
        }
    }
}

fn unguarded_linear_insert(items: &mut [(f32, usize)], mut last: usize) {
    let value = items[last];
    let mut next = last - 1;
    while before(value.0, items[next].0) {
        items[last] = items[next];
        last = next;
        next -= 1;
    }
    items[last] = value;
}

/// libstdc++'s `__partial_sort(first, last, last)`: make a heap, then pop it.
fn heap_sort(items: &mut [(f32, usize)]) {
    let len = items.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let value = items[parent];
        adjust_heap(items, parent, len, value);
        if parent == 0 {
            break;
        }
        parent -= 1;
    }
    let mut last = len;
    while last > 1 {
        last -= 1;
        let value = items[last];
        items[last] = items[0];
        adjust_heap(items, 0, last, value);
    }
}

fn adjust_heap(items: &mut [(f32, usize)], mut hole: usize, len: usize, value: (f32, usize)) {
    let top = hole;
    let mut second_child = hole;
    while second_child < (len - 1) / 2 {
        second_child = 2 * (second_child + 1);
        if before(items[second_child].0, items[second_child - 1].0) {
            second_child -= 1;
        }
        items[hole] = items[second_child];
        hole = second_child;
    }
    if len.is_multiple_of(2) && second_child == (len - 2) / 2 {
        second_child = 2 * (second_child + 1);
        items[hole] = items[second_child - 1];
        hole = second_child - 1;
    }
    // push_heap
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && before(items[parent].0, value.0) {
        items[hole] = items[parent];
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
    items[hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(values: &[f32]) -> Vec<(f32, usize)> {
        let mut items: Vec<(f32, usize)> = values.iter().copied().zip(0..).collect();
        sort_descending_like_torch(&mut items);
        items
    }

    #[test]
    fn values_come_out_descending() {
        let values: Vec<f32> = (0..200).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
        let items = sorted(&values);
        assert!(items.windows(2).all(|w| w[0].0 >= w[1].0));
        let mut indices: Vec<usize> = items.iter().map(|&(_, i)| i).collect();
        indices.sort();
        assert_eq!(indices, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn nan_goes_first_and_small_inputs_are_stable() {
        let items = sorted(&[1.0, f32::NAN, 3.0, 3.0, f32::NEG_INFINITY]);
        assert!(items[0].0.is_nan());
        // Below 16 elements libstdc++ only insertion-sorts, which keeps ties in order.
        assert_eq!(
            items[1..].iter().map(|&(_, i)| i).collect::<Vec<_>>(),
            vec![2, 3, 0, 4]
        );
    }

    #[test]
    fn heap_sort_fallback_sorts() {
        let mut items: Vec<(f32, usize)> = (0..100).map(|i| (((i * 37) % 23) as f32, i)).collect();
        heap_sort(&mut items);
        // With "before" as the ordering, the heap pops into descending values.
        assert!(items.windows(2).all(|w| w[0].0 >= w[1].0), "{items:?}");
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_input_sorts_to_a_descending_permutation(
            values in proptest::collection::vec(
                prop_oneof![
                    (-4i32..4).prop_map(|i| i as f32),
                    proptest::num::f32::ANY,
                ],
                0..200,
            )
        ) {
            let items = sorted(&values);
            let mut indices: Vec<usize> = items.iter().map(|&(_, i)| i).collect();
            indices.sort();
            prop_assert_eq!(indices, (0..values.len()).collect::<Vec<_>>());
            prop_assert!(items.windows(2).all(|w| !before(w[1].0, w[0].0)));
        }
    }
}
