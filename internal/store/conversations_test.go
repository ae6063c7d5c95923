package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// runConversationsSuite is the conversations' behaviour on both engines.
func runConversationsSuite(t *testing.T, open func(t *testing.T) *Store) {
	later := time.Now().Add(time.Hour)
	items := func(prefix string, n int) []ConversationItem {
		out := make([]ConversationItem, n)
		for i := range out {
			id := fmt.Sprintf("%s%d", prefix, i)
			out[i] = ConversationItem{ID: id, Body: []byte(`{"id":"` + id + `"}`)}
		}
		return out
	}
	ids := func(list []ConversationItem) string {
		s := ""
		for _, it := range list {
			s += it.ID + " "
		}
		return s
	}

	t.Run("ConversationsOwnedPagedAndDeleted", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		alice := mustCreateUser(t, s, "conv-alice@example.com").ID
		bob := mustCreateUser(t, s, "conv-bob@example.com").ID
		if err := s.CreateConversation(ctx, Conversation{ID: "c1", UserID: alice, Metadata: []byte(`{"k":"v"}`), ExpiresAt: later}, items("a", 3)); err != nil {
			t.Fatal(err)
		}
		if c, err := s.Conversation(ctx, alice, "c1"); err != nil || string(c.Metadata) != `{"k":"v"}` {
			t.Fatalf("Conversation = %+v, %v", c, err)
		}
		for name, err := range map[string]error{
			"get":         func() error { _, err := s.Conversation(ctx, bob, "c1"); return err }(),
			"items":       func() error { _, _, err := s.ConversationItems(ctx, bob, "c1", ItemPage{}); return err }(),
			"append":      s.AppendConversationItems(ctx, bob, "c1", items("b", 1), later),
			"update":      s.UpdateConversation(ctx, bob, "c1", []byte(`{}`), later),
			"delete item": s.DeleteConversationItem(ctx, bob, "c1", "a0"),
			"delete":      s.DeleteConversation(ctx, bob, "c1"),
		} {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("bob's %s of alice's conversation: %v, want ErrNotFound", name, err)
			}
		}
		if err := s.AppendConversationItems(ctx, alice, "c1", items("x", 2), later); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			page ItemPage
			want string
			more bool
		}{
			{ItemPage{Limit: 2}, "a0 a1 ", true},
			{ItemPage{Limit: 2, After: "a1"}, "a2 x0 ", true},
			{ItemPage{Limit: 10, After: "x0"}, "x1 ", false},
			{ItemPage{Limit: 2, Desc: true}, "x1 x0 ", true},
			{ItemPage{Limit: 10, Desc: true, After: "a1"}, "a0 ", false},
		} {
			got, more, err := s.ConversationItems(ctx, alice, "c1", tc.page)
			if err != nil || ids(got) != tc.want || more != tc.more {
				t.Errorf("%+v: %q more=%v %v, want %q more=%v", tc.page, ids(got), more, err, tc.want, tc.more)
			}
		}
		if _, _, err := s.ConversationItems(ctx, alice, "c1", ItemPage{After: "nope"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown after: %v", err)
		}
		if got, err := s.ConversationContext(ctx, alice, "c1", 2); err != nil || ids(got) != "x0 x1 " {
			t.Errorf("context of 2: %q %v", ids(got), err)
		}
		if err := s.DeleteConversationItem(ctx, alice, "c1", "a1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ConversationItem(ctx, alice, "c1", "a1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted item: %v", err)
		}
		if it, err := s.ConversationItem(ctx, alice, "c1", "x0"); err != nil || string(it.Body) != `{"id":"x0"}` {
			t.Errorf("item x0: %+v %v", it, err)
		}
		if err := s.DeleteConversation(ctx, alice, "c1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ConversationContext(ctx, alice, "c1", 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted conversation: %v", err)
		}
	})

	t.Run("ConcurrentAppendsKeepEveryItemTogether", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		u := mustCreateUser(t, s, "conv-conc@example.com").ID
		if err := s.CreateConversation(ctx, Conversation{ID: "cc", UserID: u, ExpiresAt: later}, nil); err != nil {
			t.Fatal(err)
		}
		const writers, each = 8, 3
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() { errs <- s.AppendConversationItems(ctx, u, "cc", items(fmt.Sprintf("w%d-", w), each), later) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ConversationContext(ctx, u, "cc", 0)
		if err != nil || len(got) != writers*each {
			t.Fatalf("%d items, %v; want %d", len(got), err, writers*each)
		}
		for i := 0; i < len(got); i += each {
			for j := range each {
				if got[i+j].Seq != int64(i+j) || got[i+j].ID[:3] != got[i].ID[:3] || got[i+j].ID[len(got[i+j].ID)-1] != byte('0'+j) {
					t.Fatalf("items %q: one append's items are not together and in order", ids(got))
				}
			}
		}
	})

	t.Run("ConversationsExpireAndPurge", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		u := mustCreateUser(t, s, "conv-exp@example.com").ID
		if err := s.CreateConversation(ctx, Conversation{ID: "old", UserID: u, ExpiresAt: time.Now().Add(-time.Second)}, items("o", 2)); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateConversation(ctx, Conversation{ID: "new", UserID: u, ExpiresAt: later}, items("n", 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Conversation(ctx, u, "old"); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired conversation: %v", err)
		}
		if err := s.AppendConversationItems(ctx, u, "old", items("z", 1), later); !errors.Is(err, ErrNotFound) {
			t.Errorf("append to an expired conversation: %v", err)
		}
		if n, err := s.PurgeExpiredConversations(ctx, time.Now(), 10); err != nil || n != 1 {
			t.Errorf("purge: %d %v", n, err)
		}
		if _, err := s.Conversation(ctx, u, "new"); err != nil {
			t.Errorf("live conversation after purge: %v", err)
		}
	})
}
