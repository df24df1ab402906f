package sessionlog

// How the files divide the work:
//   - event.go: the Event type and the Recorder interface engines call.
//   - spool.go: the gateway's Spool: the memory buffer, the batch writer and
//     crash recovery (OpenSpool, Record, Flush, Close).
//   - upload.go: Run, which delivers the spool through an Uploader and
//     acknowledges, and the reader of the segment files.
//   - segment.go: the on-disk format: segment records and the ack file.
//   - options.go: SpoolOption settings and their defaults.
//   - lock_*.go: one process per spool directory.
//   - store.go: the server's Store: Ingest (encrypt, chain), List, Verify.
//   - mac.go: the MAC over each session's identity fields and chain head,
//     with a key derived from the root key, and Reseal for the session
//     service.
