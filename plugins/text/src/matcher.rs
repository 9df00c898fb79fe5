//! Leftmost-longest multi-pattern search over a byte trie, for the added tokens.
//!
//! Semantics equal a non-overlapping leftmost-longest Aho-Corasick iteration (what the reference
//! uses): the earliest start wins, then the longest pattern there, and the search resumes after
//! the match. Patterns are short (≤ a few dozen bytes), so walking the trie from each candidate
//! start stays linear in the text, and unlike SIMD-prefiltered automata it is as fast in wasm as
//! natively. A dense root table rejects most bytes with one lookup.

/// Marks "no node" in the root table.
const NO_NODE: u32 = u32::MAX;

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// (byte, child node) pairs; nodes have few children, so a linear scan is fastest.
    children: Vec<(u8, u32)>,
    /// Index of the pattern that ends here (the first one given, for duplicates).
    pattern: Option<u32>,
}

/// A set of byte patterns searched leftmost-longest.
#[derive(Debug, Clone)]
pub(crate) struct PatternTrie {
    root: Box<[u32; 256]>,
    nodes: Vec<TrieNode>,
}

/// One match: byte range and pattern index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PatternMatch {
    pub start: usize,
    pub end: usize,
    pub pattern: usize,
}

impl PatternTrie {
    /// Builds the trie; empty patterns are ignored (they never match).
    pub(crate) fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Self {
        let mut root = Box::new([NO_NODE; 256]);
        let mut nodes: Vec<TrieNode> = Vec::new();
        for (index, pattern) in patterns.iter().enumerate() {
            let bytes = pattern.as_ref();
            let Some((&first, rest)) = bytes.split_first() else {
                continue;
            };
            let mut node = if root[first as usize] == NO_NODE {
                nodes.push(TrieNode::default());
                root[first as usize] = (nodes.len() - 1) as u32;
                nodes.len() - 1
            } else {
                root[first as usize] as usize
            };
            for &byte in rest {
                node = match nodes[node].children.iter().find(|(b, _)| *b == byte) {
                    Some(&(_, child)) => child as usize,
                    None => {
                        nodes.push(TrieNode::default());
                        let child = nodes.len() - 1;
                        nodes[node].children.push((byte, child as u32));
                        child
                    }
                };
            }
            nodes[node].pattern.get_or_insert(index as u32);
        }
        PatternTrie { root, nodes }
    }

    /// The leftmost-longest match starting at or after `from`.
    pub(crate) fn find_at(&self, haystack: &[u8], from: usize) -> Option<PatternMatch> {
        for start in from..haystack.len() {
            let mut node = self.root[haystack[start] as usize];
            if node == NO_NODE {
                continue;
            }
            let mut longest = None;
            let mut end = start + 1;
            loop {
                let current = &self.nodes[node as usize];
                if let Some(pattern) = current.pattern {
                    longest = Some(PatternMatch {
                        start,
                        end,
                        pattern: pattern as usize,
                    });
                }
                let Some(&byte) = haystack.get(end) else {
                    break;
                };
                match current.children.iter().find(|(b, _)| *b == byte) {
                    Some(&(_, child)) => {
                        node = child;
                        end += 1;
                    }
                    None => break,
                }
            }
            if longest.is_some() {
                return longest;
            }
        }
        None
    }

    /// Non-overlapping leftmost-longest matches, in order.
    pub(crate) fn find_iter<'a>(
        &'a self,
        haystack: &'a [u8],
    ) -> impl Iterator<Item = PatternMatch> + 'a {
        let mut from = 0;
        std::iter::from_fn(move || {
            let found = self.find_at(haystack, from)?;
            from = found.end;
            Some(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(patterns: &[&str], text: &str) -> Vec<(usize, usize, usize)> {
        PatternTrie::new(patterns)
            .find_iter(text.as_bytes())
            .map(|m| (m.start, m.end, m.pattern))
            .collect()
    }

    #[test]
    fn leftmost_then_longest_then_resume_after() {
        assert_eq!(
            matches(&["v0=1", "v0=10", "v0=100"], "v0=1000 v0=10"),
            vec![(0, 6, 2), (8, 13, 1)]
        );
        assert_eq!(matches(&["abc", "b"], "abd"), vec![(1, 2, 1)]);
        assert_eq!(matches(&["ab", "bc"], "abc"), vec![(0, 2, 0)]);
        assert_eq!(matches(&["a", "a"], "aa"), vec![(0, 1, 0), (1, 2, 0)]);
        assert_eq!(matches(&["東京", ""], "北京東京"), vec![(6, 12, 0)]);
        assert!(matches(&[], "anything").is_empty());
    }
}
