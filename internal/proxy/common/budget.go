package common

import (
	"fmt"
	"sync"
)

// DefaultMemoryBudget is the size of a Budget made with a limit of 0 or
// less: 256 MiB.
const DefaultMemoryBudget = 256 << 20

// Budget bounds the memory that the client messages being read take,
// across every connection that shares it: a semaphore of bytes. A
// connection acquires bytes before it allocates them for a message and
// releases them when it has done with the message, so that many clients
// declaring large messages cannot make the gateway allocate more than the
// budget, whatever they declare. One Budget is shared by all the engines
// of a gateway (pass the same one to each), or each engine makes its own.
//
// A Budget is safe for concurrent use. A nil *Budget bounds nothing: its
// Acquire always succeeds.
type Budget struct {
	limit int64

	mu    sync.Mutex
	inUse int64
	peak  int64
}

// NewBudget returns a Budget of limit bytes (0 or less:
// DefaultMemoryBudget).
func NewBudget(limit int64) *Budget {
	if limit <= 0 {
		limit = DefaultMemoryBudget
	}
	return &Budget{limit: limit}
}

// BudgetError is the error of an Acquire that the budget cannot grant.
type BudgetError struct {
	Want, InUse, Limit int64
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("the gateway's memory for client messages is in use (%d of %d bytes taken by other connections; %d more needed): retry later, or have the gateway's operator raise its message memory budget",
		e.InUse, e.Limit, e.Want)
}

// Acquire takes n bytes of the budget, or returns a *BudgetError, at once,
// if fewer than n are free. It never waits: a connection that cannot get
// memory is refused rather than left holding what it has.
func (b *Budget) Acquire(n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inUse+n > b.limit {
		return &BudgetError{Want: n, InUse: b.inUse, Limit: b.limit}
	}
	b.inUse += n
	b.peak = max(b.peak, b.inUse)
	return nil
}

// Release gives back n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inUse -= n
	if b.inUse < 0 {
		panic("common: Budget released more than was acquired")
	}
}

// InUse returns the bytes taken now.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inUse
}

// Peak returns the most bytes ever taken at once.
func (b *Budget) Peak() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}

// Limit returns the budget's size, in bytes.
func (b *Budget) Limit() int64 { return b.limit }
