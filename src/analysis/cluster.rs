//! Optimal chunking of a cluster of unconfirmed transactions.
//!
//! Since Bitcoin Core v31 the mempool orders each cluster by an optimal linearization and
//! mines it in chunks: the first chunk is the ancestor-closed subset with the highest fee
//! rate, the next chunk the best such subset of what remains, and so on. A transaction's
//! effective fee rate is the rate of its chunk. This module finds each chunk exactly, as a
//! maximum-ratio closure: Dinkelbach's iteration over the rate, with a minimum cut solving
//! the maximum-weight closure problem at each step.

use std::collections::VecDeque;

use crate::feerate::FeeFrac;

/// One transaction of a cluster, reduced to what chunking needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTx {
    /// Fee and size (weight units, or virtual bytes times four).
    pub frac: FeeFrac,
    /// Indexes of the in-cluster transactions this one spends from.
    pub parents: Vec<usize>,
}

/// A set of transactions mined together, with their summed fee and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Indexes into the cluster, in ascending order.
    pub members: Vec<usize>,
    /// Summed fee and size of the members.
    pub frac: FeeFrac,
}

/// Splits a cluster into chunks in mining order, highest fee rate first.
///
/// Parents must index into `cluster`; cycles cannot occur between real transactions.
pub fn chunk_cluster(cluster: &[ClusterTx]) -> Vec<Chunk> {
    let mut remaining: Vec<bool> = vec![true; cluster.len()];
    let mut chunks = Vec::new();
    while remaining.iter().any(|&left| left) {
        let members = best_closure(cluster, &remaining);
        let frac = sum_fracs(cluster, &members);
        for &member in &members {
            remaining[member] = false;
        }
        chunks.push(Chunk { members, frac });
    }
    chunks
}

/// Returns the index of the chunk holding transaction `index`.
pub fn chunk_of(chunks: &[Chunk], index: usize) -> Option<usize> {
    chunks
        .iter()
        .position(|chunk| chunk.members.contains(&index))
}

fn sum_fracs(cluster: &[ClusterTx], members: &[usize]) -> FeeFrac {
    members
        .iter()
        .fold(FeeFrac::default(), |total, &i| total + cluster[i].frac)
}

/// Finds the highest-rate subset of `remaining` that contains the in-set parents of each
/// member. On ties it returns the smallest such set, because Bitcoin Core merges a chunk
/// into the one before it only when its rate is strictly higher.
fn best_closure(cluster: &[ClusterTx], remaining: &[bool]) -> Vec<usize> {
    if cluster.len() <= SMALL_CLUSTER {
        return best_closure_by_enumeration(cluster, remaining);
    }
    let mut best: Vec<usize> = (0..cluster.len()).filter(|&i| remaining[i]).collect();
    let mut rate = sum_fracs(cluster, &best);
    loop {
        let candidate = max_weight_closure(cluster, remaining, rate, None);
        let candidate_frac = sum_fracs(cluster, &candidate);
        if candidate.is_empty() || candidate_frac.cmp_rate(&rate).is_le() {
            break;
        }
        best = candidate;
        rate = candidate_frac;
    }
    smallest_at_rate(cluster, &best, rate)
}

/// Clusters up to this size are chunked by trying every subset, which is exact and,
/// at 2^10 subsets, cheaper than a series of minimum cuts.
const SMALL_CLUSTER: usize = 10;

/// [`best_closure`] for small clusters: every subset of `remaining` as a bit mask, keeping
/// the closed one with the highest rate and, among equals, the fewest members.
fn best_closure_by_enumeration(cluster: &[ClusterTx], remaining: &[bool]) -> Vec<usize> {
    let count = cluster.len();
    let remaining_mask: u32 = (0..count)
        .filter(|&i| remaining[i])
        .fold(0, |mask, i| mask | 1 << i);
    let parent_masks: Vec<u32> = cluster
        .iter()
        .map(|tx| {
            tx.parents
                .iter()
                .fold(0, |mask, &parent| mask | 1 << parent)
                & remaining_mask
        })
        .collect();
    let mut best: Option<(u32, FeeFrac)> = None;
    let mut subset = remaining_mask;
    // Walks every non-empty subset of the remaining transactions.
    while subset != 0 {
        let closed = (0..count).all(|i| subset & (1 << i) == 0 || parent_masks[i] & !subset == 0);
        if closed {
            let frac = (0..count)
                .filter(|&i| subset & (1 << i) != 0)
                .fold(FeeFrac::default(), |total, i| total + cluster[i].frac);
            let better = match best {
                None => true,
                Some((best_subset, best_frac)) => match frac.cmp_rate(&best_frac) {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Equal => subset.count_ones() < best_subset.count_ones(),
                    std::cmp::Ordering::Less => false,
                },
            };
            if better {
                best = Some((subset, frac));
            }
        }
        subset = (subset - 1) & remaining_mask;
    }
    let chosen = best.map_or(0, |(subset, _)| subset);
    (0..count).filter(|&i| chosen & (1 << i) != 0).collect()
}

/// Returns the smallest closed subset of `best` whose rate equals `rate`: for each member,
/// the least closure containing it at zero weight, which a minimum cut finds directly.
fn smallest_at_rate(cluster: &[ClusterTx], best: &[usize], rate: FeeFrac) -> Vec<usize> {
    if best.len() < 2 {
        return best.to_vec();
    }
    let mut within = vec![false; cluster.len()];
    for &member in best {
        within[member] = true;
    }
    let mut smallest = best.to_vec();
    for &member in best {
        let candidate = max_weight_closure(cluster, &within, rate, Some(member));
        let frac = sum_fracs(cluster, &candidate);
        if candidate.len() < smallest.len() && frac.cmp_rate(&rate).is_eq() {
            smallest = candidate;
        }
    }
    smallest
}

/// Solves max Σ (fee·W − F·size) over closed subsets of `remaining`, where F/W is `rate`.
///
/// Each transaction with positive weight gets an edge from the source, each with negative
/// weight an edge to the sink, and each child an infinite edge to its parents; the source
/// side of a minimum cut is the best closure, and the least one among equals. `forced`, if
/// set, must be in the closure.
fn max_weight_closure(
    cluster: &[ClusterTx],
    remaining: &[bool],
    rate: FeeFrac,
    forced: Option<usize>,
) -> Vec<usize> {
    let count = cluster.len();
    let source = count;
    let sink = count + 1;
    let mut network = FlowNetwork::new(count + 2);
    for (i, tx) in cluster.iter().enumerate() {
        if !remaining[i] {
            continue;
        }
        let weight = i128::from(tx.frac.fee_sat) * i128::from(rate.weight)
            - i128::from(rate.fee_sat) * i128::from(tx.frac.weight);
        if weight > 0 {
            network.add_edge(source, i, weight);
        } else if weight < 0 {
            network.add_edge(i, sink, -weight);
        }
        for &parent in &tx.parents {
            if remaining[parent] {
                network.add_edge(i, parent, i128::MAX / 4);
            }
        }
    }
    if let Some(forced) = forced {
        network.add_edge(source, forced, i128::MAX / 4);
    }
    network.max_flow(source, sink);
    let reachable = network.reachable_from(source);
    (0..count)
        .filter(|&i| remaining[i] && reachable[i])
        .collect()
}

/// A small residual network for Edmonds-Karp maximum flow.
struct FlowNetwork {
    capacity: Vec<Vec<i128>>,
}

impl FlowNetwork {
    fn new(nodes: usize) -> Self {
        Self {
            capacity: vec![vec![0; nodes]; nodes],
        }
    }

    fn add_edge(&mut self, from: usize, to: usize, capacity: i128) {
        self.capacity[from][to] = self.capacity[from][to].saturating_add(capacity);
    }

    fn max_flow(&mut self, source: usize, sink: usize) {
        while let Some(previous) = self.augmenting_path(source, sink) {
            let mut bottleneck = i128::MAX;
            let mut node = sink;
            while node != source {
                let from = previous[node];
                bottleneck = bottleneck.min(self.capacity[from][node]);
                node = from;
            }
            let mut node = sink;
            while node != source {
                let from = previous[node];
                self.capacity[from][node] -= bottleneck;
                self.capacity[node][from] = self.capacity[node][from].saturating_add(bottleneck);
                node = from;
            }
        }
    }

    fn augmenting_path(&self, source: usize, sink: usize) -> Option<Vec<usize>> {
        let nodes = self.capacity.len();
        let mut previous = vec![usize::MAX; nodes];
        previous[source] = source;
        let mut queue = VecDeque::from([source]);
        while let Some(node) = queue.pop_front() {
            for (next, &capacity) in self.capacity[node].iter().enumerate() {
                if previous[next] == usize::MAX && capacity > 0 {
                    previous[next] = node;
                    if next == sink {
                        return Some(previous);
                    }
                    queue.push_back(next);
                }
            }
        }
        None
    }

    fn reachable_from(&self, source: usize) -> Vec<bool> {
        let nodes = self.capacity.len();
        let mut seen = vec![false; nodes];
        seen[source] = true;
        let mut queue = VecDeque::from([source]);
        while let Some(node) = queue.pop_front() {
            for (next, &capacity) in self.capacity[node].iter().enumerate() {
                if !seen[next] && capacity > 0 {
                    seen[next] = true;
                    queue.push_back(next);
                }
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(fee_sat: u64, vsize: u64, parents: &[usize]) -> ClusterTx {
        ClusterTx {
            frac: FeeFrac::from_vsize(fee_sat, vsize),
            parents: parents.to_vec(),
        }
    }

    #[test]
    fn enumeration_and_minimum_cut_agree() {
        // Random clusters of up to eight transactions, chunked both ways.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for _ in 0..300 {
            let count = 1 + usize::try_from(next(8)).unwrap_or(0);
            let cluster: Vec<ClusterTx> = (0..count)
                .map(|i| {
                    let parents = (0..i).filter(|_| next(3) == 0).collect::<Vec<_>>();
                    tx(next(5_000), 60 + next(400), &parents)
                })
                .collect();
            let remaining = vec![true; count];
            let by_enumeration = best_closure_by_enumeration(&cluster, &remaining);
            let mut by_cut: Vec<usize> = (0..count).collect();
            let mut rate = sum_fracs(&cluster, &by_cut);
            loop {
                let candidate = max_weight_closure(&cluster, &remaining, rate, None);
                let frac = sum_fracs(&cluster, &candidate);
                if candidate.is_empty() || frac.cmp_rate(&rate).is_le() {
                    break;
                }
                by_cut = candidate;
                rate = frac;
            }
            let by_cut = smallest_at_rate(&cluster, &by_cut, rate);
            let enumerated_frac = sum_fracs(&cluster, &by_enumeration);
            assert!(enumerated_frac.cmp_rate(&rate).is_eq(), "{cluster:?}");
            assert_eq!(by_enumeration.len(), by_cut.len(), "{cluster:?}");
        }
    }

    #[test]
    fn singleton_is_one_chunk() {
        let chunks = chunk_cluster(&[tx(141, 141, &[])]);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].frac, FeeFrac::from_vsize(141, 141));
    }

    #[test]
    fn child_lifts_parent_into_one_chunk() {
        // A 1 sat/vB parent and a 60 sat/vB child are mined together.
        let chunks = chunk_cluster(&[tx(141, 141, &[]), tx(6600, 110, &[0])]);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].members, vec![0, 1]);
    }

    #[test]
    fn richer_parent_is_its_own_chunk() {
        let chunks = chunk_cluster(&[tx(3000, 300, &[]), tx(200, 200, &[0])]);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].members, vec![0]);
        assert_eq!(chunks[1].members, vec![1]);
    }

    #[test]
    fn low_fee_ancestors_drag_child_down() {
        // Grandparent and parent at 1 sat/vB, child at 4 sat/vB: one chunk of 846 sat.
        let cluster = [tx(141, 141, &[]), tx(141, 141, &[0]), tx(564, 141, &[1])];
        let chunks = chunk_cluster(&cluster);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].frac.fee_sat, 846);
    }

    #[test]
    fn best_branch_is_chosen_first() {
        // Two children of one parent: only the rich child joins the parent's chunk.
        let cluster = [tx(100, 100, &[]), tx(2000, 100, &[0]), tx(150, 100, &[0])];
        let chunks = chunk_cluster(&cluster);
        assert_eq!(chunks[0].members, vec![0, 1]);
        assert_eq!(chunks[1].members, vec![2]);
    }

    #[test]
    fn child_with_two_parents() {
        // A child paying for two poor parents, beside a rich unrelated sibling of one.
        let cluster = [
            tx(100, 200, &[]),
            tx(50, 200, &[]),
            tx(5000, 100, &[0, 1]),
            tx(5000, 100, &[0]),
        ];
        let chunks = chunk_cluster(&cluster);
        assert_eq!(chunks[0].members, vec![0, 3]);
        assert_eq!(chunks[1].members, vec![1, 2]);
    }
}
