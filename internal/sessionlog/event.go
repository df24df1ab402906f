// Package sessionlog carries what happened in a session, from the gateway
// that saw it to the server that keeps it: the Event type, the gateway's
// durable spool and uploader, and the server's encrypted, hash-chained store.
package sessionlog

import "time"

// Event kinds.
const (
	KindQuery        = "query"         // PostgreSQL simple Query (one event per Query message)
	KindExecute      = "execute"       // PostgreSQL extended protocol: Parse/Bind/Execute
	KindFunctionCall = "function_call" // PostgreSQL FunctionCall
	KindCopyIn       = "copy_in"       // COPY FROM STDIN: bytes, not data
	KindCopyOut      = "copy_out"      // COPY TO STDOUT: bytes, not data
	KindCommand      = "command"       // a MongoDB command
	KindConnect      = "connect"       // a client connection opened
	KindDisconnect   = "disconnect"    // a client connection closed
)

// Event is one recorded action of a session. The gateway fills everything
// but Seq, which the server assigns when it chains the event.
type Event struct {
	// ID is unique (UUIDv7, made at the gateway); uploads are idempotent on it.
	ID string `json:"id"`
	// StartID, on the final event of a statement that was recorded
	// write-ahead (WriteAheadRecorder), is the ID of its start record. The
	// start is delivered as an event of its own only when the final could
	// not follow it in time: while the statement still runs (Outcome
	// empty: "running"), or when the gateway stopped or failed before
	// writing the final ("outcome unknown").
	StartID   string    `json:"startId,omitempty"`
	SessionID string    `json:"sessionId"`
	Seq       int64     `json:"seq,omitempty"` // position in the session's chain (server)
	Time      time.Time `json:"time"`          // when the request was sent
	ConnID    string    `json:"connId"`        // which client connection
	Kind      string    `json:"kind"`

	// Statement is the SQL text (passwords masked) or the MongoDB command
	// document as JSON (bookkeeping removed, values redacted if asked).
	Statement  string   `json:"statement,omitempty"`
	Params     []string `json:"params,omitempty"` // bound parameter values, as text (NULL as null)
	Database   string   `json:"database,omitempty"`
	Collection string   `json:"collection,omitempty"`
	Command    string   `json:"command,omitempty"` // MongoDB command name

	// Outcome: the command tag (SELECT 5, INSERT 0 3), "ok", or "error";
	// empty on the start record of a statement still running;
	// "cancelled" for a request stopped by the cancel the gateway sent when
	// its session ended; "outcome unknown" for one whose connection was cut
	// before an answer (it may have run, even committed), or whose start
	// record is all the gateway wrote before it stopped; "terminated" for
	// the disconnect of a connection ended by its session's end, whose
	// ErrorCode is the end's reason (expired, terminated...) and ErrorMsg
	// the words its client was told. See the engines' package docs.
	Outcome    string `json:"outcome,omitempty"`
	ErrorCode  string `json:"errorCode,omitempty"` // SQLSTATE or MongoDB code
	ErrorMsg   string `json:"errorMessage,omitempty"`
	Rows       int64  `json:"rows"`            // rows returned or affected; documents for MongoDB
	Bytes      int64  `json:"bytes,omitempty"` // COPY payload size
	DurationUS int64  `json:"durationUs"`      // from request to outcome, in microseconds

	// Damaged is set by the server's List, never by a gateway, on an event
	// that fails its integrity check (altered, moved from another row): it
	// says so in words, and only ID, SessionID and Seq are filled. The rest
	// of the page is listed as usual.
	Damaged string `json:"damaged,omitempty"`
}

// Recorder receives events from a protocol engine. Record must not block
// the relay: implementations buffer and write in batches.
type Recorder interface {
	Record(ev Event)
}

// HealthReporter is implemented by a Recorder that can fail to persist
// events (the gateway's spool: disk full, over its size cap). While Err
// returns an error, the engines refuse new statements of the sessions
// recording into it (fail closed) with that error's words; a recorder that
// does not implement it is taken as always healthy.
type HealthReporter interface {
	Err() error
}

// WriteAheadRecorder is implemented by a Recorder that can persist the start
// of a statement before the statement is forwarded (the gateway's spool), so
// that a crash of the gateway loses no statement that ran.
//
// An engine calls Begin with the start of a request (its own fresh ID,
// Kind, Statement and Params masked as the final event will be,
// Database/Collection/Command, Time; Outcome empty) before it forwards the
// request upstream, and, once the request is answered, Records the final
// event as usual, with a fresh ID and StartID set to the start's ID.
//
// Begin returns once the start is written where a crash of the process
// cannot lose it (the spool: written to its file; with WithSyncAlways,
// fsynced too). It returns an error, which the engines refuse the request
// with, forwarding nothing (fail closed), when it cannot: the spool is
// closed, over its size cap, or its disk fails. Under WithFailOpen it
// logs and counts the loss and returns nil.
type WriteAheadRecorder interface {
	Recorder
	Begin(ev Event) error
}
