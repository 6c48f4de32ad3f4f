//! The prerender / ISR cache: seeds from the bundle, stale-while-revalidate state, on-demand invalidation.
