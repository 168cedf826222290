package persistence

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// openTestStore opens a store in dir and closes it when the test ends.
func openTestStore(t *testing.T, dir string, cfg Config) *Store {
	t.Helper()
	cfg.Dir = dir
	s, err := Open(cfg, discard)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustWait(t *testing.T, b *Batch) {
	t.Helper()
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("batch not committed within 10s")
	}
	if err := b.Wait(); err != nil {
		t.Fatalf("batch: %v", err)
	}
}

func mustGet(t *testing.T, s *Store, key string) string {
	t.Helper()
	v, ok, err := s.Get(key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if !ok {
		t.Fatalf("Get(%q): key missing", key)
	}
	return v
}

func mustMissing(t *testing.T, s *Store, key string) {
	t.Helper()
	v, ok, err := s.Get(key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if ok {
		t.Fatalf("Get(%q) = %q, want missing", key, v)
	}
}

// holdWriter blocks the writer goroutine (inside a commit's Afterwards
// callback) until the returned release function is called, so the test can
// pile writes into the next batch deterministically. The store must be idle.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	entered := make(chan struct{})
	gate := make(chan struct{})
	// Attach the callback to the open batch, still empty: the writer commits
	// it (no records, so no counters move) and then runs the callback, which
	// holds it.
	s.mu.Lock()
	s.cur.afterwards = append(s.cur.afterwards, func(error) {
		close(entered)
		<-gate
	})
	s.mu.Unlock()
	s.signal()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("writer did not start the holding commit")
	}
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return release
}

func TestOpenDefaultsAndCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "data")
	s := openTestStore(t, dir, Config{})
	if s.Policy() != FsyncAlways {
		t.Errorf("Policy() = %q, want %q by default", s.Policy(), FsyncAlways)
	}
	if want := filepath.Join(dir, FileName); s.Path() != want {
		t.Errorf("Path() = %q, want %q", s.Path(), want)
	}
	if s.cfg.ShrinkMinSize != 32<<20 || s.cfg.ShrinkRatio != 2 || s.cfg.ShrinkInterval != time.Minute {
		t.Errorf("shrink defaults = %d/%v/%v, want 32MiB/2/1m", s.cfg.ShrinkMinSize, s.cfg.ShrinkRatio, s.cfg.ShrinkInterval)
	}
	for _, name := range []string{FileName, "LOCK"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s not created: %v", name, err)
		}
	}
	if s.DB() == nil {
		t.Error("DB() is nil")
	}
	st := s.Stats()
	if st.Commits != 0 || st.Records != 0 || st.Keys != 0 || st.TruncatedTail != 0 {
		t.Errorf("fresh store stats = %+v, want zero counters", st)
	}
}

func TestOpenRejectsBadFsyncPolicy(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, Fsync: "sometimes"}, discard)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open with fsync=sometimes succeeded")
	}
	for _, want := range []string{`"sometimes"`, "always", "everysec"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	// Nothing was locked: a valid open of the same directory works.
	openTestStore(t, dir, Config{Fsync: FsyncEverySecond})
}

func TestOpenDataDirIsAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "notadir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{Dir: file}, discard)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open on a regular file succeeded")
	}
	if !strings.Contains(err.Error(), "data directory") {
		t.Errorf("error %q does not mention the data directory", err)
	}
}

func TestWriteGetDeleteAndReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, Config{})
	mustWait(t, s.Write(Set("a", "1"), Set("b", "2"), Set("c", "3")))
	mustWait(t, s.Write(Set("b", "two"), Del("c"), Del("never-existed")))
	if got := mustGet(t, s, "a"); got != "1" {
		t.Errorf("a = %q, want 1", got)
	}
	if got := mustGet(t, s, "b"); got != "two" {
		t.Errorf("b = %q, want two", got)
	}
	mustMissing(t, s, "c")
	mustMissing(t, s, "never-existed")
	st := s.Stats()
	if st.Commits != 2 || st.Records != 6 || st.Keys != 2 {
		t.Errorf("stats = commits %d records %d keys %d, want 2/6/2", st.Commits, st.Records, st.Keys)
	}
	if st.Syncs != 2 {
		t.Errorf("Syncs = %d, want 2 (one per commit with fsync=always)", st.Syncs)
	}
	if st.FileSize <= 0 {
		t.Errorf("FileSize = %d, want > 0", st.FileSize)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTestStore(t, dir, Config{})
	if got := mustGet(t, s2, "a"); got != "1" {
		t.Errorf("after reopen a = %q, want 1", got)
	}
	if got := mustGet(t, s2, "b"); got != "two" {
		t.Errorf("after reopen b = %q, want two", got)
	}
	mustMissing(t, s2, "c")
	if st := s2.Stats(); st.Keys != 2 || st.TruncatedTail != 0 {
		t.Errorf("after reopen keys %d truncated %d, want 2 and 0", st.Keys, st.TruncatedTail)
	}
}

func TestValuesWithBinaryBytesSurvive(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, Config{})
	key := "k\x00with\r\nbinary"
	val := string([]byte{0, 1, 2, '\r', '\n', '*', '$', 0xff, 0xfe})
	mustWait(t, s.Write(Set(key, val), Set("empty", "")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, dir, Config{})
	if got := mustGet(t, s2, key); got != val {
		t.Errorf("binary value = %q, want %q", got, val)
	}
	if got := mustGet(t, s2, "empty"); got != "" {
		t.Errorf("empty value = %q, want empty", got)
	}
}

func TestCloseIsIdempotentAndRefusesWrites(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir}, discard)
	if err != nil {
		t.Fatal(err)
	}
	// Not waited for: Close must still commit it.
	pending := s.Write(Set("pending", "v"))
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := pending.Wait(); err != nil {
		t.Errorf("write submitted before Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if err := s.Write(Set("x", "1")).Wait(); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if err := s.WriteAfter(Set("x", "1")).Wait(); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteAfter after Close = %v, want ErrClosed", err)
	}
	if err := s.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
	var got error
	s.Afterwards(s.Write(Set("y", "1")), func(err error) { got = err }) // runs inline: batch is already done
	if !errors.Is(got, ErrClosed) {
		t.Errorf("Afterwards on a closed store's batch got %v, want ErrClosed", got)
	}
	st := s.Stats() // must not touch the closed database
	if st.Keys != 0 || st.FileSize <= 0 {
		t.Errorf("Stats after Close = keys %d size %d, want 0 keys and the file size", st.Keys, st.FileSize)
	}

	s2 := openTestStore(t, dir, Config{})
	if got := mustGet(t, s2, "pending"); got != "v" {
		t.Errorf("pending = %q after reopen, want v", got)
	}
	mustMissing(t, s2, "x")
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, Config{})
	s2, err := Open(Config{Dir: dir}, discard)
	if err == nil {
		_ = s2.Close()
		t.Fatal("second Open of the same directory succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	for _, want := range []string{dir, "--data-dir", "stop the other broker"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// The first store is unaffected.
	mustWait(t, s.Write(Set("k", "v")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing releases the lock.
	s3 := openTestStore(t, dir, Config{})
	if got := mustGet(t, s3, "k"); got != "v" {
		t.Errorf("k = %q, want v", got)
	}
}

func TestCorruptFileIsAnError(t *testing.T) {
	cases := map[string]func(good []byte) []byte{
		"garbage in the middle": func(good []byte) []byte {
			return append(append(append([]byte{}, good...), "this is not a record\r\n"...), good...)
		},
		"bad part length": func(good []byte) []byte {
			return append(append([]byte{}, good...), "*3\r\n$x\r\nset\r\n"...)
		},
		// buntdb indexes the first three bytes of the command name.
		"short command name": func(good []byte) []byte {
			return append(append([]byte{}, good...), "*2\r\n$1\r\ns\r\n$1\r\nk\r\n"...)
		},
		"empty command name": func(good []byte) []byte {
			return append(append([]byte{}, good...), "*1\r\n$0\r\n\r\n"...)
		},
		"unknown command": func(good []byte) []byte {
			return append(append([]byte{}, good...), "*2\r\n$4\r\nfrob\r\n$1\r\nk\r\n"...)
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Config{Dir: dir}, discard)
			if err != nil {
				t.Fatal(err)
			}
			mustWait(t, s.Write(Set("a", "1"), Set("b", "2")))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, FileName)
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			bad := damage(good)
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}

			s2, err := Open(Config{Dir: dir}, discard)
			if err == nil {
				_ = s2.Close()
				t.Fatal("Open of a corrupt store succeeded")
			}
			msg := err.Error()
			for _, want := range []string{path, "corrupt", "move the file aside", "backup"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			// The damaged file is left alone for the operator.
			if now, _ := os.ReadFile(path); !bytes.Equal(now, bad) {
				t.Error("Open modified the corrupt file")
			}
			// The failed Open released the directory lock: once the file
			// is moved aside the store opens (empty).
			if err := os.Rename(path, path+".bad"); err != nil {
				t.Fatal(err)
			}
			s3 := openTestStore(t, dir, Config{})
			if st := s3.Stats(); st.Keys != 0 {
				t.Errorf("store after moving the file aside has %d keys, want 0", st.Keys)
			}
		})
	}
}

func TestTornTailIsDropped(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir}, discard)
	if err != nil {
		t.Fatal(err)
	}
	mustWait(t, s.Write(Set("a", "1")))
	mustWait(t, s.Write(Set("b", "2")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every proper prefix of a complete record is a torn write.
	record := "*3\r\n$3\r\nset\r\n$4\r\ntorn\r\n$5\r\nvalue\r\n"
	for _, cut := range []int{1, 4, 9, 20, len(record) - 1} {
		t.Run(fmt.Sprintf("cut=%d", cut), func(t *testing.T) {
			tail := record[:cut]
			if err := os.WriteFile(path, append(append([]byte{}, good...), tail...), 0o600); err != nil {
				t.Fatal(err)
			}
			var logBuf bytes.Buffer
			s, err := Open(Config{Dir: dir}, slog.New(slog.NewTextHandler(&logBuf, nil)))
			if err != nil {
				t.Fatalf("Open with a torn tail: %v", err)
			}
			st := s.Stats()
			if st.TruncatedTail != int64(len(tail)) {
				t.Errorf("TruncatedTail = %d, want %d", st.TruncatedTail, len(tail))
			}
			if st.FileSize != int64(len(good)) {
				t.Errorf("FileSize = %d after dropping the tail, want %d", st.FileSize, len(good))
			}
			if !strings.Contains(logBuf.String(), "incomplete write") {
				t.Errorf("no warning about the dropped write in the log: %q", logBuf.String())
			}
			if got := mustGet(t, s, "a"); got != "1" {
				t.Errorf("a = %q, want 1", got)
			}
			if got := mustGet(t, s, "b"); got != "2" {
				t.Errorf("b = %q, want 2", got)
			}
			mustMissing(t, s, "torn")
			// New writes land after the good records, not after the garbage.
			mustWait(t, s.Write(Set("c", "3")))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2 := openTestStore(t, dir, Config{})
			if st := s2.Stats(); st.TruncatedTail != 0 || st.Keys != 3 {
				t.Errorf("second reopen: truncated %d keys %d, want 0 and 3", st.TruncatedTail, st.Keys)
			}
			if got := mustGet(t, s2, "c"); got != "3" {
				t.Errorf("c = %q, want 3", got)
			}
			if err := s2.Close(); err != nil {
				t.Fatal(err)
			}
			// Restore the baseline (without c) for the next cut.
			if err := os.WriteFile(path, good, 0o600); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestGroupCommitSharesCommitsAndSyncs(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{Fsync: FsyncAlways})
	release := holdWriter(t, s)
	before := s.Stats()

	const writers = 64
	batches := make([]*Batch, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			batches[i] = s.Write(Set(fmt.Sprintf("k%02d", i), fmt.Sprint(i)))
		})
	}
	wg.Wait()
	for i, b := range batches {
		if b != batches[0] {
			t.Fatalf("writer %d got a different batch: concurrent writes were not grouped", i)
		}
		select {
		case <-b.Done():
			t.Fatal("batch committed while the writer was held")
		default:
		}
	}
	release()
	for _, b := range batches {
		mustWait(t, b)
	}
	after := s.Stats()
	if d := after.Commits - before.Commits; d != 1 {
		t.Errorf("commits for %d concurrent writes = %d, want 1 (shared)", writers, d)
	}
	if d := after.Syncs - before.Syncs; d != 1 {
		t.Errorf("fsyncs for %d concurrent writes = %d, want 1 (shared)", writers, d)
	}
	if d := after.Records - before.Records; d != writers {
		t.Errorf("records = %d, want %d", d, writers)
	}
	if after.Keys != writers {
		t.Errorf("keys = %d, want %d", after.Keys, writers)
	}
	if after.MaxSync < after.LastSync || after.TotalSync < after.MaxSync || after.SyncErrors != 0 {
		t.Errorf("sync timings inconsistent: %+v", after)
	}
}

func TestConcurrentWritersAllDurable(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, Config{})
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Write(Set(fmt.Sprintf("w%d/%03d", w, i), "v")).Wait(); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Records != writers*each || st.Keys != writers*each {
		t.Errorf("records %d keys %d, want %d", st.Records, st.Keys, writers*each)
	}
	if st.Commits > writers*each || st.Syncs != st.Commits {
		t.Errorf("commits %d syncs %d: want at most one commit per write and one fsync per commit", st.Commits, st.Syncs)
	}
}

func TestWriteAfterCommitsAfterEarlierWrites(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	release := holdWriter(t, s)

	var mu sync.Mutex
	var order []string
	record := func(name string) func(error) {
		return func(err error) {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
		}
	}
	a := s.Write(Set("k", "A"), Set("a", "1"))
	b := s.WriteAfter(Set("k", "B"), Set("b", "1"))
	c := s.Write(Set("c", "1")) // a later plain write joins the open batch, before b
	if a == b {
		t.Fatal("WriteAfter joined the open batch")
	}
	if a != c {
		t.Fatal("a plain Write after WriteAfter did not join the open batch")
	}
	s.Afterwards(b, record("b"))
	s.Afterwards(a, record("a"))
	release()
	mustWait(t, b)
	// Waiting for b waits for a: batches commit in order.
	select {
	case <-a.Done():
	default:
		t.Fatal("WriteAfter batch done before the batch opened before it")
	}
	mustWait(t, a)
	if got := mustGet(t, s, "k"); got != "B" {
		t.Errorf("k = %q, want B (the WriteAfter value, committed last)", got)
	}
	// Afterwards callbacks run just after a batch is marked done.
	got := func() string { mu.Lock(); defer mu.Unlock(); return strings.Join(order, ",") }
	for start := time.Now(); got() != "a,b" && time.Since(start) < 5*time.Second; time.Sleep(time.Millisecond) {
	}
	if got() != "a,b" {
		t.Errorf("commit order = %v, want [a b]", got())
	}
}

func TestWriteAfterOnIdleStore(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	mustWait(t, s.WriteAfter(Set("x", "1")))
	if got := mustGet(t, s, "x"); got != "1" {
		t.Errorf("x = %q, want 1", got)
	}
	// Chains of WriteAfter keep their order.
	var last *Batch
	for i := range 20 {
		if i%2 == 0 {
			last = s.WriteAfter(Set("chain", fmt.Sprint(i)))
		} else {
			last = s.Write(Set("chain", fmt.Sprint(i)))
		}
		mustWait(t, last)
	}
	if got := mustGet(t, s, "chain"); got != "19" {
		t.Errorf("chain = %q, want 19", got)
	}
}

func TestAfterwardsRunsOnceWithResult(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	b := s.Write(Set("k", "v"))
	got := make(chan error, 2)
	s.Afterwards(b, func(err error) { got <- err })
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("Afterwards err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Afterwards callback not run")
	}
	// On a batch that is already committed it runs inline.
	ran := false
	s.Afterwards(b, func(err error) { ran = err == nil })
	if !ran {
		t.Error("Afterwards on a committed batch did not run inline with a nil error")
	}
	select {
	case <-got:
		t.Error("first callback ran twice")
	case <-time.After(20 * time.Millisecond):
	}
	if v := mustGet(t, s, "k"); v != "v" {
		t.Errorf("k = %q", v)
	}
}

func TestFlushCommitsAndSyncs(t *testing.T) {
	for _, policy := range []Fsync{FsyncAlways, FsyncEverySecond} {
		t.Run(string(policy), func(t *testing.T) {
			s := openTestStore(t, t.TempDir(), Config{Fsync: policy})
			// Flush on an idle store returns.
			if err := s.Flush(); err != nil {
				t.Fatalf("Flush on an idle store: %v", err)
			}
			base := s.Stats().Syncs
			s.Write(Set("a", "1")) // not waited for
			if err := s.Flush(); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			mustGet(t, s, "a")
			st := s.Stats()
			if st.Syncs <= base {
				t.Errorf("Flush did not fsync (syncs %d -> %d)", base, st.Syncs)
			}
			if st.Commits != 1 {
				t.Errorf("commits = %d, want 1", st.Commits)
			}
		})
	}
}

func TestFsyncEverySecondSyncsInBackground(t *testing.T) {
	dir := t.TempDir()
	opened := time.Now()
	s := openTestStore(t, dir, Config{Fsync: FsyncEverySecond})
	if s.Policy() != FsyncEverySecond {
		t.Fatalf("Policy() = %q", s.Policy())
	}
	mustWait(t, s.Write(Set("a", "1")))
	mustWait(t, s.Write(Set("b", "2")))
	st := s.Stats()
	if st.Commits != 2 {
		t.Fatalf("commits = %d, want 2", st.Commits)
	}
	// The first background tick is a second after Open; before it nothing
	// may have been fsynced (on a very slow machine the tick may have come).
	fast := time.Since(opened) < 900*time.Millisecond
	if fast && st.Syncs != 0 {
		t.Errorf("everysec fsynced on commit: syncs = %d, want 0 right after the writes", st.Syncs)
	}
	// The written data is visible to readers (it is in the OS) at once.
	if got := mustGet(t, s, "b"); got != "2" {
		t.Errorf("b = %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Syncs == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no background fsync within 5s under everysec")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Both commits shared the one background fsync; an idle store does not
	// fsync again.
	if n := s.Stats().Syncs; fast && n != 1 {
		t.Errorf("syncs = %d after one tick, want 1", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, dir, Config{Fsync: FsyncEverySecond})
	if got := mustGet(t, s2, "a"); got != "1" {
		t.Errorf("a = %q after reopen", got)
	}
}

func TestScanAndScanRange(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	mustWait(t, s.Write(
		Set("p/3", "c"), Set("p/1", "a"), Set("p/2", "b"),
		Set("o/1", "x"), Set("q/1", "y"), Set("p", "bare"),
	))
	var keys []string
	if err := s.Scan("p/", func(k, v string) bool {
		keys = append(keys, k+"="+v)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys, " "); got != "p/1=a p/2=b p/3=c" {
		t.Errorf("Scan(p/) = %q, want only p/ keys in order", got)
	}
	keys = nil
	_ = s.Scan("p/", func(k, _ string) bool {
		keys = append(keys, k)
		return len(keys) < 2
	})
	if len(keys) != 2 {
		t.Errorf("Scan did not stop when fn returned false: %v", keys)
	}
	n := 0
	_ = s.Scan("zzz", func(string, string) bool { n++; return true })
	if n != 0 {
		t.Errorf("Scan of an absent prefix visited %d keys", n)
	}
	keys = nil
	if err := s.ScanRange("p/1", "p/3", func(k, _ string) bool {
		keys = append(keys, k)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys, " "); got != "p/1 p/2" {
		t.Errorf("ScanRange[p/1,p/3) = %q, want p/1 p/2", got)
	}
}

func TestShrinkCompactsAndKeepsData(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, Config{})
	val := strings.Repeat("v", 200)
	for i := range 50 {
		mustWait(t, s.Write(Set("hot", fmt.Sprint(i)+val), Set(fmt.Sprintf("gone%d", i), val)))
		mustWait(t, s.Write(Del(fmt.Sprintf("gone%d", i))))
	}
	mustWait(t, s.Write(Set("keep", "1")))
	before := s.Stats()
	if err := s.Shrink(); err != nil {
		t.Fatalf("Shrink: %v", err)
	}
	after := s.Stats()
	if after.Shrinks != 1 {
		t.Errorf("Shrinks = %d, want 1", after.Shrinks)
	}
	if after.FileSize >= before.FileSize/4 {
		t.Errorf("file %d bytes after shrink, was %d: not compacted", after.FileSize, before.FileSize)
	}
	if after.Syncs <= before.Syncs {
		t.Error("Shrink did not fsync the new file")
	}
	if s.lastSz.Load() != after.FileSize {
		t.Errorf("compacted size %d not remembered (%d)", after.FileSize, s.lastSz.Load())
	}
	if got := mustGet(t, s, "hot"); got != "49"+val {
		t.Errorf("hot = %.10q..., want the last value", got)
	}
	// Writes after the shrink go to the new file and are fsynced there.
	mustWait(t, s.Write(Set("post", "1")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, dir, Config{})
	st := s2.Stats()
	if st.Keys != 3 {
		t.Errorf("keys after reopen = %d, want 3 (hot, keep, post)", st.Keys)
	}
	mustGet(t, s2, "post")
	mustGet(t, s2, "keep")
	mustMissing(t, s2, "gone7")
}

func TestShouldShrinkPolicy(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{ShrinkMinSize: 1000, ShrinkRatio: 2})
	mustWait(t, s.Write(Set("k", strings.Repeat("x", 2000))))
	size := s.fileSize()
	if size <= 1000 {
		t.Fatalf("file only %d bytes", size)
	}
	s.lastSz.Store(size)
	if s.shouldShrink() {
		t.Error("shrink wanted although the file has not grown since the last compaction")
	}
	s.lastSz.Store(size/2 - 1)
	if !s.shouldShrink() {
		t.Error("shrink not wanted although the file is more than ratio times its compacted size")
	}
	s.cfg.ShrinkMinSize = size + 1
	if s.shouldShrink() {
		t.Error("shrink wanted below ShrinkMinSize")
	}
}

func TestAutomaticShrink(t *testing.T) {
	// maintenance ticks once a second; with a tiny interval and threshold
	// the first tick after the file outgrows the ratio compacts it.
	s := openTestStore(t, t.TempDir(), Config{ShrinkMinSize: 1, ShrinkRatio: 1.5, ShrinkInterval: time.Millisecond})
	val := strings.Repeat("y", 100)
	for i := range 40 {
		mustWait(t, s.Write(Set("same", fmt.Sprint(i)+val)))
	}
	pre := s.Stats()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Shrinks == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no automatic compaction within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// (If a tick already compacted during the writes, the size before is
	// not the grown size.)
	if st := s.Stats(); pre.Shrinks == 0 && st.FileSize >= pre.FileSize {
		t.Errorf("file %d bytes after automatic shrink, was %d", st.FileSize, pre.FileSize)
	}
	if got := mustGet(t, s, "same"); got != "39"+val {
		t.Errorf("same = %.10q..., want the last value", got)
	}
}

func TestOnFatalIsSettable(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	called := false
	s.OnFatal(func(error) { called = true })
	mustWait(t, s.Write(Set("k", "v")))
	if called {
		t.Error("OnFatal called on a healthy store")
	}
	if st := s.Stats(); st.SyncErrors != 0 {
		t.Errorf("SyncErrors = %d", st.SyncErrors)
	}
}

func TestEmptyWriteCompletesOnIdleStore(t *testing.T) {
	// A batch handed out for no ops (Log.Ack of unknown ids, Hook.WaitFor
	// with nothing to add, an empty Purge) must still complete: callers
	// Wait on it.
	s := openTestStore(t, t.TempDir(), Config{})
	mustWait(t, s.Write())
	mustWait(t, s.WriteAfter())
	// It still orders after earlier writes.
	a := s.Write(Set("a", "1"))
	mustWait(t, s.WriteAfter())
	select {
	case <-a.Done():
	default:
		t.Error("empty WriteAfter completed before the write opened before it")
	}
	if st := s.Stats(); st.Commits != 1 || st.Records != 1 {
		t.Errorf("commits %d records %d, want 1 and 1 (empty batches are not commits)", st.Commits, st.Records)
	}
}

func TestDelIfDeletesOnlyTheExpectedValue(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Config{})
	mustWait(t, s.Write(Set("a", "old"), Set("b", "old")))
	mustWait(t, s.Write(DelIf("a", "other"), DelIf("b", "old"), DelIf("absent", "x")))
	if got := mustGet(t, s, "a"); got != "old" {
		t.Errorf("a = %q: DelIf with a different value deleted it", got)
	}
	mustMissing(t, s, "b")
	// A later Set in the same batch wins over an earlier DelIf, and a Set
	// before it makes the DelIf miss.
	mustWait(t, s.Write(DelIf("a", "old"), Set("a", "new"), Set("c", "new"), DelIf("c", "old")))
	if got := mustGet(t, s, "a"); got != "new" {
		t.Errorf("a = %q, want new", got)
	}
	if got := mustGet(t, s, "c"); got != "new" {
		t.Errorf("c = %q, want new", got)
	}
}

// A store reopened with mostly dead records compacts at once, without
// waiting for a ShrinkInterval: a broker restarted more often than that
// would otherwise never compact.
func TestOpenCompactsDeadRecords(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{ShrinkMinSize: 4 << 10, ShrinkRatio: 2, ShrinkInterval: time.Hour}
	s := openTestStore(t, dir, cfg)
	val := strings.Repeat("v", 200)
	for i := range 200 {
		mustWait(t, s.Write(Set("hot", fmt.Sprint(i)+val), Set(fmt.Sprintf("gone%d", i), val)))
		mustWait(t, s.Write(Del(fmt.Sprintf("gone%d", i))))
	}
	mustWait(t, s.Write(Set("keep", "1")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	grown := fi.Size()

	var logBuf bytes.Buffer
	cfg.Dir = dir
	s2, err := Open(cfg, slog.New(slog.NewTextHandler(&logBuf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	st := s2.Stats()
	if st.Shrinks != 1 {
		t.Fatalf("Shrinks = %d after reopening a %d-byte file of mostly dead records, want 1", st.Shrinks, grown)
	}
	if st.FileSize >= grown/10 {
		t.Errorf("file %d bytes after compaction at open, was %d", st.FileSize, grown)
	}
	if s2.lastSz.Load() != st.FileSize {
		t.Errorf("baseline %d, want the compacted size %d", s2.lastSz.Load(), st.FileSize)
	}
	if !strings.Contains(logBuf.String(), "compacted at start-up") {
		t.Errorf("compaction not logged: %q", logBuf.String())
	}
	if _, err := os.Stat(path + compactSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("compacted copy left behind: %v", err)
	}
	if got := mustGet(t, s2, "hot"); got != "199"+val {
		t.Errorf("hot = %.10q..., want the last value", got)
	}
	mustGet(t, s2, "keep")
	mustMissing(t, s2, "gone7")
	// Writes go to the compacted file, are fsynced there, and survive.
	syncs := st.Syncs
	mustWait(t, s2.Write(Set("post", "1")))
	if s2.Stats().Syncs <= syncs {
		t.Error("a write after the compaction was not fsynced")
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	s3 := openTestStore(t, dir, cfg)
	if st := s3.Stats(); st.Keys != 3 || st.Shrinks != 0 {
		t.Errorf("second reopen: %d keys and %d compactions, want 3 (hot, keep, post) and 0", st.Keys, st.Shrinks)
	}
	mustGet(t, s3, "post")
}

// A store whose records are live is not compacted at open, and the
// periodic check measures growth from its live size.
func TestOpenKeepsLiveFile(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{ShrinkMinSize: 1, ShrinkRatio: 2, ShrinkInterval: time.Hour}
	s := openTestStore(t, dir, cfg)
	for i := range 100 {
		mustWait(t, s.Write(Set(fmt.Sprintf("k%03d", i), strings.Repeat("x", 100))))
	}
	// One overwrite of every key: the file is about twice its live size,
	// not more.
	for i := range 80 {
		mustWait(t, s.Write(Set(fmt.Sprintf("k%03d", i), strings.Repeat("y", 100))))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, dir, cfg)
	st := s2.Stats()
	if st.Shrinks != 0 {
		t.Errorf("Shrinks = %d for a file less than ratio times its live records", st.Shrinks)
	}
	if live := s2.lastSz.Load(); live <= 0 || live >= st.FileSize || float64(st.FileSize) > 2*float64(live) {
		t.Errorf("baseline %d for a %d-byte file, want its live size (over half the file)", live, st.FileSize)
	}
	if st.Keys != 100 {
		t.Errorf("keys = %d, want 100", st.Keys)
	}
}

// The unfinished copy of a compaction interrupted by a crash is removed;
// the database file is what counts.
func TestOpenRemovesInterruptedCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, Config{})
	mustWait(t, s.Write(Set("a", "1")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	for _, tmp := range []string{path + compactSuffix, path + ".tmp"} {
		if err := os.WriteFile(tmp, []byte("*3\r\n$3\r\nset\r\n$1\r\nb\r\n$1\r\n2\r\n*3\r\n$3\r\nse"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2 := openTestStore(t, dir, Config{})
	if got := mustGet(t, s2, "a"); got != "1" {
		t.Errorf("a = %q, want 1", got)
	}
	mustMissing(t, s2, "b")
	for _, tmp := range []string{path + compactSuffix, path + ".tmp"} {
		if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", filepath.Base(tmp), err)
		}
	}
}
