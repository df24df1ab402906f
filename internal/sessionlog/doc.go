package sessionlog

// What the gateway's spool promises (the Spool type says it in full): a
// statement's start is written to the spool's file before the statement
// is forwarded (write-ahead, Spool.Begin), so a crash of the gateway
// process loses no statement that ran: one whose answer was not yet
// written is delivered with outcome "outcome unknown". Writes are fsynced
// in batches (every 50 ms), so a power loss can lose the last unsynced
// batch; --spool-sync=always (WithSyncAlways) fsyncs each start before
// its statement is forwarded and each final event when it is recorded
// (the engines record it as the answer is relayed), which closes that too.
//
// How the files divide the work:
//   - event.go: the Event type and the Recorder, HealthReporter and
//     WriteAheadRecorder interfaces engines call.
//   - spool.go: the gateway's Spool: the memory buffer, the batch writer and
//     crash recovery (OpenSpool, Record, Flush, Close).
//   - writeahead.go: Begin, which writes a statement's start record before
//     the statement is forwarded, so that a crash of the gateway loses no
//     statement that ran; the start records' states, and what the upload
//     does with each (skip it, wait at it, deliver it as running or as
//     "outcome unknown").
//   - upload.go: Run, which delivers the spool through an Uploader and
//     acknowledges, and the reader of the segment files.
//   - segment.go: the on-disk format: segment records and the ack file.
//   - options.go: SpoolOption settings and their defaults.
//   - lock_*.go: one process per spool directory.
//   - store.go: the server's Store: Ingest (encrypt, chain), List, Verify.
//   - mac.go: the MAC over each session's identity fields and chain head,
//     with a key derived from the root key, and Reseal for the session
//     service.
