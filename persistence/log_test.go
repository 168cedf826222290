package persistence

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
)

func openTestLog(t *testing.T, s *Store, name string) *Log {
	t.Helper()
	l, err := s.Log(name)
	if err != nil {
		t.Fatalf("Log(%q): %v", name, err)
	}
	if l.Name() != name {
		t.Fatalf("Name() = %q, want %q", l.Name(), name)
	}
	return l
}

func appendValues(t *testing.T, l *Log, values ...string) []uint64 {
	t.Helper()
	vs := make([][]byte, len(values))
	for i, v := range values {
		vs[i] = []byte(v)
	}
	ids, b := l.Append(vs...)
	mustWait(t, b)
	if len(ids) != len(values) {
		t.Fatalf("Append returned %d ids for %d values", len(ids), len(values))
	}
	return ids
}

func entryIDs(es []Entry) []uint64 {
	ids := make([]uint64, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}

func mustLease(t *testing.T, l *Log, n int) []Entry {
	t.Helper()
	es, err := l.Lease(n)
	if err != nil {
		t.Fatalf("Lease(%d): %v", n, err)
	}
	return es
}

func scanIDs(t *testing.T, l *Log, after uint64) []uint64 {
	t.Helper()
	var ids []uint64
	if err := l.Scan(after, func(e Entry) bool {
		ids = append(ids, e.ID)
		return true
	}); err != nil {
		t.Fatalf("Scan(%d): %v", after, err)
	}
	return ids
}

func TestLogInvalidName(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	for _, name := range []string{"", "a\x00b"} {
		if _, err := s.Log(name); err == nil {
			t.Errorf("Log(%q) succeeded, want an error", name)
		}
	}
}

func TestLogAppendGetPut(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	l := openTestLog(t, s, "jobs")
	ids := appendValues(t, l, "a", "b", "c")
	if !slices.Equal(ids, []uint64{1, 2, 3}) {
		t.Fatalf("ids = %v, want [1 2 3]", ids)
	}
	more := appendValues(t, l, "d")
	if more[0] != 4 {
		t.Errorf("next id = %d, want 4", more[0])
	}
	if l.Len() != 4 || l.Leased() != 0 {
		t.Errorf("Len %d Leased %d, want 4 and 0", l.Len(), l.Leased())
	}
	for i, want := range []string{"a", "b", "c", "d"} {
		got, err := l.Get(uint64(i + 1))
		if err != nil || string(got) != want {
			t.Errorf("Get(%d) = %q, %v; want %q", i+1, got, err, want)
		}
	}
	if _, err := l.Get(99); !errors.Is(err, ErrUnknownEntry) {
		t.Errorf("Get(99) err = %v, want ErrUnknownEntry", err)
	}

	b, err := l.Put(2, []byte("B2"))
	if err != nil {
		t.Fatalf("Put(2): %v", err)
	}
	mustWait(t, b)
	if got, _ := l.Get(2); string(got) != "B2" {
		t.Errorf("after Put Get(2) = %q, want B2", got)
	}
	if l.Len() != 4 {
		t.Errorf("Put changed Len to %d", l.Len())
	}
	if _, err := l.Put(99, []byte("x")); !errors.Is(err, ErrUnknownEntry) {
		t.Errorf("Put(99) err = %v, want ErrUnknownEntry", err)
	}
	// Empty and binary values round-trip.
	bin := string([]byte{0, 0xff, '\r', '\n'})
	ids = appendValues(t, l, "", bin)
	if got, err := l.Get(ids[0]); err != nil || len(got) != 0 {
		t.Errorf("empty value: %q, %v", got, err)
	}
	if got, err := l.Get(ids[1]); err != nil || string(got) != bin {
		t.Errorf("binary value: %q, %v", got, err)
	}
}

func TestLogLeaseReleaseAck(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	l := openTestLog(t, s, "q")
	appendValues(t, l, "v1", "v2", "v3", "v4", "v5")

	first := mustLease(t, l, 2)
	if got := entryIDs(first); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("first lease = %v, want [1 2]", got)
	}
	if string(first[0].Value) != "v1" || string(first[1].Value) != "v2" {
		t.Errorf("lease values = %q %q", first[0].Value, first[1].Value)
	}
	if l.Leased() != 2 || l.Len() != 5 {
		t.Errorf("Leased %d Len %d, want 2 and 5", l.Leased(), l.Len())
	}
	second := mustLease(t, l, 2)
	if got := entryIDs(second); !slices.Equal(got, []uint64{3, 4}) {
		t.Fatalf("second lease = %v, want [3 4] (leased records are not handed out twice)", got)
	}

	// Released records come back before newer ones, in id order.
	l.Release(4, 2)
	l.Release(2)   // releasing twice does not duplicate it
	l.Release(5)   // never leased: ignored
	l.Release(777) // unknown: ignored
	if l.Leased() != 2 {
		t.Errorf("Leased = %d after releasing 2 and 4, want 2", l.Leased())
	}
	again := mustLease(t, l, 10)
	if got := entryIDs(again); !slices.Equal(got, []uint64{2, 4, 5}) {
		t.Fatalf("lease after release = %v, want [2 4 5]", got)
	}
	if l.Leased() != 5 {
		t.Errorf("Leased = %d, want 5", l.Leased())
	}
	if es := mustLease(t, l, 10); len(es) != 0 {
		t.Errorf("lease with everything leased = %v, want none", entryIDs(es))
	}

	mustWait(t, l.Ack(1, 3))
	if l.Len() != 3 || l.Leased() != 3 {
		t.Errorf("after Ack: Len %d Leased %d, want 3 and 3", l.Len(), l.Leased())
	}
	for _, id := range []uint64{1, 3} {
		if _, err := l.Get(id); !errors.Is(err, ErrUnknownEntry) {
			t.Errorf("Get(%d) after Ack = %v, want ErrUnknownEntry", id, err)
		}
	}
	// Acking unknown or already acked ids is a no-op with a good batch.
	mustWait(t, l.Ack(1, 999))
	if l.Len() != 3 {
		t.Errorf("Len = %d after acking unknown ids", l.Len())
	}

	// A record released and then acked is not handed out.
	l.Release(2)
	mustWait(t, l.Ack(2))
	l.Release(4)
	if got := entryIDs(mustLease(t, l, 10)); !slices.Equal(got, []uint64{4}) {
		t.Errorf("lease = %v, want [4] (2 was acked after its release)", got)
	}
	// Releasing an acked id does nothing.
	l.Release(2)
	if got := mustLease(t, l, 10); len(got) != 0 {
		t.Errorf("lease after releasing an acked id = %v", entryIDs(got))
	}
	if es := mustLease(t, l, 0); len(es) != 0 {
		t.Errorf("Lease(0) = %v", entryIDs(es))
	}
}

func TestLogLeaseOddCounts(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	l := openTestLog(t, s, "odd")
	appendValues(t, l, "a", "b")
	// A negative or huge count must not panic or allocate for it.
	if es := mustLease(t, l, -1); len(es) != 0 {
		t.Errorf("Lease(-1) = %v, want none", entryIDs(es))
	}
	es := mustLease(t, l, math.MaxInt)
	if got := entryIDs(es); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("Lease(MaxInt) = %v, want [1 2]", got)
	}
}

func TestLogScan(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	l := openTestLog(t, s, "a")
	other := openTestLog(t, s, "ab") // shares a name prefix: must not leak into "a"
	appendValues(t, l, "1", "2", "3", "4")
	appendValues(t, other, "x", "y")
	mustWait(t, l.Ack(2))
	mustLease(t, l, 1) // Scan ignores leases

	if got := scanIDs(t, l, 0); !slices.Equal(got, []uint64{1, 3, 4}) {
		t.Errorf("Scan(0) = %v, want [1 3 4]", got)
	}
	if got := scanIDs(t, l, 1); !slices.Equal(got, []uint64{3, 4}) {
		t.Errorf("Scan(1) = %v, want [3 4]", got)
	}
	if got := scanIDs(t, l, 4); len(got) != 0 {
		t.Errorf("Scan(4) = %v, want none", got)
	}
	if got := scanIDs(t, l, math.MaxUint64); len(got) != 0 {
		t.Errorf("Scan(MaxUint64) = %v, want none", got)
	}
	if got := scanIDs(t, other, 0); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("other log Scan(0) = %v, want [1 2]", got)
	}
	var vals []string
	_ = l.Scan(0, func(e Entry) bool {
		vals = append(vals, string(e.Value))
		return false
	})
	if !slices.Equal(vals, []string{"1"}) {
		t.Errorf("Scan did not stop at false: %v", vals)
	}
	if l.Leased() != 1 {
		t.Errorf("Scan changed leases: Leased = %d", l.Leased())
	}
}

func TestLogOrderBeyondHexDigits(t *testing.T) {
	// Ids are zero-padded hex, so key order is id order also across
	// digit-count boundaries (9 < 10 < 0x10 < 0x100).
	s := openTestStore(t, t.TempDir(), Config{})
	l := openTestLog(t, s, "many")
	vals := make([][]byte, 300)
	for i := range vals {
		vals[i] = fmt.Appendf(nil, "%d", i+1)
	}
	ids, b := l.Append(vals...)
	mustWait(t, b)
	got := scanIDs(t, l, 0)
	if !slices.Equal(got, ids) || !slices.IsSorted(got) {
		t.Fatalf("Scan order does not match append order")
	}
	es := mustLease(t, l, 300)
	for i, e := range es {
		if e.ID != uint64(i+1) || string(e.Value) != fmt.Sprint(i+1) {
			t.Fatalf("lease[%d] = %d %q", i, e.ID, e.Value)
		}
	}
}

func TestLogPurge(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	l := openTestLog(t, s, "p")
	keep := openTestLog(t, s, "keep")
	appendValues(t, l, "a", "b", "c")
	appendValues(t, keep, "k")
	mustLease(t, l, 1)
	mustWait(t, l.Ack(3))

	n, b := l.Purge()
	mustWait(t, b)
	if n != 2 {
		t.Errorf("Purge = %d, want 2", n)
	}
	if l.Len() != 0 || l.Leased() != 0 {
		t.Errorf("after Purge Len %d Leased %d", l.Len(), l.Leased())
	}
	if got := scanIDs(t, l, 0); len(got) != 0 {
		t.Errorf("records left after Purge: %v", got)
	}
	if es := mustLease(t, l, 10); len(es) != 0 {
		t.Errorf("Lease after Purge = %v", entryIDs(es))
	}
	// Releasing a purged lease does not resurrect it.
	l.Release(1)
	if es := mustLease(t, l, 10); len(es) != 0 {
		t.Errorf("Lease after releasing a purged id = %v", entryIDs(es))
	}
	if keep.Len() != 1 || len(scanIDs(t, keep, 0)) != 1 {
		t.Error("Purge touched another log")
	}
	// Ids keep growing after a purge.
	ids := appendValues(t, l, "d")
	if ids[0] != 4 {
		t.Errorf("id after Purge = %d, want 4", ids[0])
	}
	n, b = l.Purge()
	mustWait(t, b)
	if n != 1 {
		t.Errorf("second Purge = %d, want 1", n)
	}
	if n, b := l.Purge(); n != 0 || b.Wait() != nil {
		t.Errorf("Purge of an empty log = %d, %v", n, b.Wait())
	}
}

func TestLogSurvivesReopenWithoutLeases(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir}, discard)
	if err != nil {
		t.Fatal(err)
	}
	l := openTestLog(t, s, "durable")
	appendValues(t, l, "a", "b", "c", "d", "e")
	mustWait(t, l.Ack(2))
	b, err := l.Put(4, []byte("D"))
	if err != nil {
		t.Fatal(err)
	}
	mustWait(t, b)
	if got := entryIDs(mustLease(t, l, 3)); !slices.Equal(got, []uint64{1, 3, 4}) {
		t.Fatalf("lease = %v", got)
	}
	// Not waited for: Close commits it.
	l.Append([]byte("f"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTestStore(t, dir, Config{})
	l2 := openTestLog(t, s2, "durable")
	if l2.Len() != 5 || l2.Leased() != 0 {
		t.Fatalf("after reopen Len %d Leased %d, want 5 and 0 (leases are in memory only)", l2.Len(), l2.Leased())
	}
	es := mustLease(t, l2, 10)
	if got := entryIDs(es); !slices.Equal(got, []uint64{1, 3, 4, 5, 6}) {
		t.Fatalf("lease after reopen = %v, want every record in id order", got)
	}
	want := map[uint64]string{1: "a", 3: "c", 4: "D", 5: "e", 6: "f"}
	for _, e := range es {
		if string(e.Value) != want[e.ID] {
			t.Errorf("record %d = %q, want %q", e.ID, e.Value, want[e.ID])
		}
	}
	if ids := appendValues(t, l2, "g"); ids[0] != 7 {
		t.Errorf("first id after reopen = %d, want 7", ids[0])
	}
	if _, err := s2.Log("durable-other"); err != nil {
		t.Fatal(err)
	}
}

func TestLogCorruptKey(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	mustWait(t, s.Write(Set(logPrefix("bad")+"not-hex", "v")))
	if _, err := s.Log("bad"); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("Log over a malformed key: %v, want ErrCorruptRecord", err)
	}
}

func TestLogConcurrentUse(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{Fsync: FsyncEverySecond})
	l := openTestLog(t, s, "c")
	const producers, each = 4, 50
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				_, b := l.Append(fmt.Appendf(nil, "%d/%d", p, i))
				if err := b.Wait(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var mu sync.Mutex
	seen := map[uint64]int{}
	for range 2 {
		wg.Go(func() {
			for range 200 {
				es, err := l.Lease(7)
				if err != nil {
					t.Error(err)
					return
				}
				var ack, rel []uint64
				for i, e := range es {
					if i%3 == 0 {
						rel = append(rel, e.ID)
					} else {
						ack = append(ack, e.ID)
					}
				}
				mu.Lock()
				for _, id := range ack {
					seen[id]++
				}
				mu.Unlock()
				l.Release(rel...)
				if err := l.Ack(ack...).Wait(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Drain what is left.
	for {
		es := mustLease(t, l, 100)
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			seen[e.ID]++
		}
		mustWait(t, l.Ack(entryIDs(es)...))
	}
	if len(seen) != producers*each {
		t.Errorf("acked %d distinct records, want %d", len(seen), producers*each)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("record %d acked %d times (handed out while leased)", id, n)
		}
	}
	if l.Len() != 0 || l.Leased() != 0 {
		t.Errorf("Len %d Leased %d after draining", l.Len(), l.Leased())
	}
}

func TestLogLeaseBeforeAppendIsCommitted(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	l := openTestLog(t, s, "early")
	appendValues(t, l, "committed")
	release := holdWriter(t, s)
	ids, b := l.Append([]byte("pending"))
	// The pending record cannot be read yet: it is not handed out, and it
	// must not stay leased (it would be lost until a restart).
	es := mustLease(t, l, 10)
	if got := entryIDs(es); !slices.Equal(got, []uint64{1}) {
		t.Errorf("lease with an uncommitted append = %v, want [1]", got)
	}
	if l.Leased() != 1 {
		t.Errorf("Leased = %d, want 1 (the uncommitted record is not leased)", l.Leased())
	}
	release()
	mustWait(t, b)
	es = mustLease(t, l, 10)
	if got := entryIDs(es); !slices.Equal(got, ids) || string(es[0].Value) != "pending" {
		t.Errorf("lease after the commit = %v, want %v", got, ids)
	}
}
