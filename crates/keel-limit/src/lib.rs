//! Rate limits for keel: GCRA on requests and tokens per minute, kept in this process or shared
//! between keel instances through Redis.
