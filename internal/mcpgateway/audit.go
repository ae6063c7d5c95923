package mcpgateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/agentapi/agentapi/internal/store"
)

// auditQueue bounds the records waiting to be written; past it a record is
// dropped with a warning rather than holding up a tool call.
const auditQueue = 4096

// auditBatch bounds the records written in one transaction.
const auditBatch = 256

// auditWriteTimeout bounds one write of a batch.
const auditWriteTimeout = 5 * time.Second

// auditor writes audit records in the background, so a tool call does not
// wait for the database (SQLite has one writer).
type auditor struct {
	store  auditStore
	logger *slog.Logger
	queue  chan store.MCPCall
	done   chan struct{}

	mu     sync.Mutex
	closed bool
}

func newAuditor(s auditStore, logger *slog.Logger) *auditor {
	a := &auditor{store: s, logger: logger, queue: make(chan store.MCPCall, auditQueue), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *auditor) record(c store.MCPCall) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		a.logger.Warn("mcp gateway: a tool call ended after shutdown; its audit record was dropped", "server", c.Server, "tool", c.Tool, "user_id", c.UserID)
		return
	}
	select {
	case a.queue <- c:
	default:
		a.logger.Warn("mcp gateway: audit queue full; a tool call's record was dropped", "server", c.Server, "tool", c.Tool, "user_id", c.UserID)
	}
}

// run writes what is queued, as many records as are waiting (up to
// auditBatch) in one transaction.
func (a *auditor) run() {
	defer close(a.done)
	batch := make([]store.MCPCall, 0, auditBatch)
	for c := range a.queue {
		batch = append(batch[:0], c)
	gather:
		for len(batch) < auditBatch {
			select {
			case c, ok := <-a.queue:
				if !ok {
					break gather
				}
				batch = append(batch, c)
			default:
				break gather
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), auditWriteTimeout)
		if err := a.store.RecordMCPCalls(ctx, batch); err != nil {
			a.logger.Warn("mcp gateway: could not write tool calls' audit records", "records", len(batch), "error", err.Error())
		}
		cancel()
	}
}

// close stops taking records and waits, until ctx ends, for the queued
// ones to be written.
func (a *auditor) close(ctx context.Context) error {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.queue)
	}
	a.mu.Unlock()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
