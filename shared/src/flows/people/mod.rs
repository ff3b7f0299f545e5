//! People across connections: the per-customer person index, kept from the change feeds, and
//! the app's views of it (`GET /people`, `GET /people/{person_id}`). The rules of a match are
//! [`crate::domain::people`]'s; the keys are [`crate::crypto::match_keys`]'.
//!
//! **From the feed, not a rescan.** After a connection's run, the worker reads the connection's
//! feed from where the index stopped (`CUR#<connection>`): each directory or individual change
//! names a source, whose current record gives its keys; the source is linked, re-keyed, split
//! off or removed ([`index`]). Pay and company changes are passed over. One indexer per
//! customer at a time (a lease), so two connections' workers never decide against each other;
//! the second comes back when the first is done. A disconnect takes the connection's sources
//! out ([`index::unindex_connection`]), and with them the keys only they had.
//!
//! **Forgetting** one person (an operator's erasure, [`forget`]) removes their records from
//! every connection, keeps them from being synced again, and takes them out of the index.
//!
//! **What a page costs.** A page of a thousand feed entries reads its sources' records (100 a
//! request), their links, the holders of their keys and the persons those name (100 a request
//! each), decides in memory, and writes once: about sixty DynamoDB calls for five hundred
//! people, whatever the customer's size.

pub mod forget;
pub mod index;
pub mod view;
