//! Admission control for keel: how many requests each `upstream:model` serves at once, a bounded
//! queue in front of it with priorities and fair share between keys, and shedding.
