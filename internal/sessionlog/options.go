package sessionlog

import (
	"log/slog"
	"time"
)

// Spool defaults.
const (
	DefaultFlushInterval   = 50 * time.Millisecond
	DefaultWriteBatch      = 1000
	DefaultMaxBufferEvents = 100_000
	DefaultMaxBufferBytes  = 64 << 20
	DefaultSegmentSize     = 8 << 20
	DefaultUploadEvents    = 500
	DefaultUploadBytes     = 1 << 20
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 10 * time.Second
	DefaultMaxSize         = 1 << 30
	DefaultRunningAfter    = time.Second
	// FreeAfter is how much fully delivered data the segment being written
	// may hold before the writer starts a new one and removes it.
	FreeAfter = 64 << 10
)

// SpoolOption changes a setting of OpenSpool.
type SpoolOption func(*spoolConfig)

type spoolConfig struct {
	log             *slog.Logger
	flushInterval   time.Duration
	writeBatch      int
	maxBufferEvents int
	maxBufferBytes  int
	segmentSize     int64
	uploadEvents    int
	uploadBytes     int
	minBackoff      time.Duration
	maxBackoff      time.Duration
	maxSize         int64
	syncAlways      bool
	failOpen        bool
	runningAfter    time.Duration
}

func defaultSpoolConfig() spoolConfig {
	return spoolConfig{
		log:             slog.Default(),
		flushInterval:   DefaultFlushInterval,
		writeBatch:      DefaultWriteBatch,
		maxBufferEvents: DefaultMaxBufferEvents,
		maxBufferBytes:  DefaultMaxBufferBytes,
		segmentSize:     DefaultSegmentSize,
		uploadEvents:    DefaultUploadEvents,
		uploadBytes:     DefaultUploadBytes,
		minBackoff:      DefaultMinBackoff,
		maxBackoff:      DefaultMaxBackoff,
		maxSize:         DefaultMaxSize,
		runningAfter:    DefaultRunningAfter,
	}
}

// WithLogger sends the spool's log lines (write errors, upload retries,
// damaged files) to l instead of slog.Default(). No line holds statement
// text: events are named by id and session.
func WithLogger(l *slog.Logger) SpoolOption {
	return func(c *spoolConfig) {
		if l != nil {
			c.log = l
		}
	}
}

// WithFlushInterval sets how long recorded events may wait in memory before
// they are written and fsynced as one batch. Default 50 ms.
func WithFlushInterval(d time.Duration) SpoolOption {
	return func(c *spoolConfig) {
		if d > 0 {
			c.flushInterval = d
		}
	}
}

// WithWriteBatch sets how many buffered events make the writer write at
// once, without waiting for the flush interval. Default 1,000.
func WithWriteBatch(events int) SpoolOption {
	return func(c *spoolConfig) {
		if events > 0 {
			c.writeBatch = events
		}
	}
}

// WithMaxBuffer bounds the events held in memory before they are on disk:
// when the buffer holds this many events, or this many bytes (estimated from
// the events' text), Record waits until the writer has taken the buffer. An
// event larger than the byte bound is still taken when the buffer is empty.
// Defaults 100,000 events and 64 MiB.
func WithMaxBuffer(events, bytes int) SpoolOption {
	return func(c *spoolConfig) {
		if events > 0 {
			c.maxBufferEvents = events
		}
		if bytes > 0 {
			c.maxBufferBytes = bytes
		}
	}
}

// WithSegmentSize sets the size, in bytes, after which the writer starts a
// new segment file. Acknowledged segments are removed whole; a segment the
// server has acknowledged entirely is also closed and removed once it holds
// FreeAfter (64 KiB), so a healthy spool keeps little delivered data
// whatever this size. Default 8 MiB.
func WithSegmentSize(bytes int64) SpoolOption {
	return func(c *spoolConfig) {
		if bytes > 0 {
			c.segmentSize = bytes
		}
	}
}

// WithUploadBatch bounds one Upload call: at most this many events and about
// this many bytes of encoded events (a single larger event is sent alone).
// Defaults 500 events and 1 MiB.
func WithUploadBatch(events, bytes int) SpoolOption {
	return func(c *spoolConfig) {
		if events > 0 {
			c.uploadEvents = events
		}
		if bytes > 0 {
			c.uploadBytes = bytes
		}
	}
}

// WithBackoff sets the wait after a failed upload (min) and the most it
// doubles to (max). The same backoff applies to failed disk writes. Defaults
// 100 ms and 10 s.
func WithBackoff(min, max time.Duration) SpoolOption {
	return func(c *spoolConfig) {
		if min > 0 {
			c.minBackoff = min
		}
		if max > 0 {
			c.maxBackoff = max
		}
		if c.maxBackoff < c.minBackoff {
			c.maxBackoff = c.minBackoff
		}
	}
}

// WithMaxSize caps the bytes the spool's segment files may hold on disk
// (events not yet acknowledged, plus at most a segment of delivered ones).
// A batch that would go over the cap is not written: the spool then reports
// the problem through Err (fail closed) until deliveries free space, or
// drops the batch under WithFailOpen. Default 1 GiB.
func WithMaxSize(bytes int64) SpoolOption {
	return func(c *spoolConfig) {
		if bytes > 0 {
			c.maxSize = bytes
		}
	}
}

// WithSyncAlways makes Begin and Record return only once their record is
// written and fsynced (writes from concurrent sessions still share one
// fsync): a statement is forwarded only once its start is durable, and its
// answer only once its final event is. The default batches: records are
// durable within one flush interval, so a power loss can lose the last
// batch; a crash of the process loses nothing, as Begin writes each start
// before its statement is forwarded.
func WithSyncAlways(always bool) SpoolOption {
	return func(c *spoolConfig) { c.syncAlways = always }
}

// WithFailOpen makes the spool drop the events it cannot persist (disk full
// or failing, over WithMaxSize) instead of reporting them through Err: Err
// stays nil, so sessions go on unrecorded; every drop is counted (Stats) and
// logged at error level. The default fails closed.
func WithFailOpen(open bool) SpoolOption {
	return func(c *spoolConfig) { c.failOpen = open }
}

// WithRunningAfter sets how long a statement started with Begin may run
// before the upload delivers its start record as an event of its own
// (Outcome empty: running), rather than wait for its final event. Until
// then the upload waits at the start record, so statements that end in
// time are delivered once, as their final event. Default 1 s.
func WithRunningAfter(d time.Duration) SpoolOption {
	return func(c *spoolConfig) {
		if d > 0 {
			c.runningAfter = d
		}
	}
}
