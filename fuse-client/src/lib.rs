//! placeholder
pub mod cache;
pub mod inode;
pub mod readahead;
