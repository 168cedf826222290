package persistence

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tidwall/buntdb"
)

// Fsync is the durability policy of the store.
type Fsync string

const (
	// FsyncAlways makes every acknowledged write durable on disk before it is
	// acknowledged: a commit is written and fsynced, shared by all writers that
	// joined it (group commit).
	FsyncAlways Fsync = "always"
	// FsyncEverySecond writes every commit to the operating system before it is
	// acknowledged (so a killed process loses nothing) and fsyncs once a second
	// (so a power loss or kernel crash can lose up to one second).
	FsyncEverySecond Fsync = "everysec"
)

// ErrClosed is returned by writes after the store was closed.
var ErrClosed = errors.New("persistence: store closed")

// ErrLocked is returned by Open when another process holds the data directory.
var ErrLocked = errors.New("persistence: data directory is in use by another process")

// Config configures a Store.
type Config struct {
	Dir   string `yaml:"-"` // data directory; the database is Dir/mote.db
	Fsync Fsync  `yaml:"-"`
	// ShrinkMinSize is the file size below which the store is never compacted.
	ShrinkMinSize int64 `yaml:"shrink_min_size"`
	// ShrinkRatio compacts the file once it is this many times larger than
	// its live records (measured at the previous compaction, or at open).
	ShrinkRatio float64 `yaml:"shrink_ratio"`
	// ShrinkInterval is how often the compaction policy is checked; it is
	// also checked, and applied, when the store is opened.
	ShrinkInterval time.Duration `yaml:"shrink_interval"`
}

// Op is one write: a set of Key to Value, or a delete of Key.
type Op struct {
	Key   string
	Value string
	Del   bool
	IfEq  bool // with Del: delete only if the key still holds Value
}

// Set returns an Op that sets key to value.
func Set(key, value string) Op { return Op{Key: key, Value: value} }

// Del returns an Op that deletes key.
func Del(key string) Op { return Op{Key: key, Del: true} }

// DelIf returns an Op that deletes key only if it still holds value when
// its batch commits (a later Set of the key wins).
func DelIf(key, value string) Op { return Op{Key: key, Value: value, Del: true, IfEq: true} }

// Batch is a group of writes committed in one buntdb transaction. Batches
// commit strictly in the order they were opened, so waiting for a batch also
// waits for every batch before it.
type Batch struct {
	ops        []Op
	done       chan struct{}
	err        error
	afterwards []func(error)
	handed     bool // returned by Write or WriteAfter: commit it even with no ops, so Wait returns
}

// Wait blocks until the batch is committed (and, with FsyncAlways, synced)
// and returns the commit error, if any.
func (b *Batch) Wait() error {
	<-b.done
	return b.err
}

// Done is closed when the batch is committed.
func (b *Batch) Done() <-chan struct{} { return b.done }

func newBatch() *Batch { return &Batch{done: make(chan struct{})} }

func closedBatch() *Batch {
	b := &Batch{done: make(chan struct{}), err: ErrClosed}
	close(b.done)
	return b
}

// Stats are the store's counters.
type Stats struct {
	Commits       uint64        // transactions committed
	Records       uint64        // records written (sets and deletes)
	Syncs         uint64        // fsync calls
	SyncErrors    uint64        // failed fsync calls
	LastSync      time.Duration // duration of the latest fsync
	MaxSync       time.Duration // longest fsync so far
	TotalSync     time.Duration // time spent in fsync
	Shrinks       uint64        // compactions
	FileSize      int64         // current file size in bytes
	Keys          int           // live keys
	TruncatedTail int64         // bytes of an incomplete final write dropped at open
}

// Store is the single buntdb database of a broker, with a writer goroutine
// that commits writes in groups (many callers' records in one transaction and
// one fsync) in the order they were submitted.
//
// Lock order: Store.mu is a leaf; it is never held while calling out.
type Store struct {
	db     *buntdb.DB
	path   string
	cfg    Config
	log    *slog.Logger
	lockf  *os.File
	kick   chan struct{}
	quit   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	once   sync.Once

	mu   sync.Mutex
	cur  *Batch // open batch, accepting writes
	next *Batch // batch after cur, for writes that must follow cur
	shut bool   // Close has begun: no new batches

	syncMu  sync.Mutex // guards syncf (reopened after a shrink)
	syncf   *os.File   // a handle on the database file used only for fsync
	dirty   atomic.Bool
	lastSz  atomic.Int64 // file size after the previous compaction
	stats   statsCounters
	onFatal func(error)
	onSync  atomic.Pointer[func(time.Duration)]
}

type statsCounters struct {
	commits, records, syncs, syncErrors, shrinks atomic.Uint64
	lastSync, maxSync, totalSync                 atomic.Int64
	truncated                                    atomic.Int64
}

// FileName is the database file inside the data directory.
const FileName = "mote.db"

// Open opens (or creates) the store in cfg.Dir. A truncated final record (a
// write torn by a crash; it was never acknowledged) is dropped and reported
// in the log; any other damage is an error that names the file.
func Open(cfg Config, log *slog.Logger) (*Store, error) {
	if cfg.Fsync == "" {
		cfg.Fsync = FsyncAlways
	}
	if cfg.Fsync != FsyncAlways && cfg.Fsync != FsyncEverySecond {
		return nil, fmt.Errorf("persistence: fsync %q: want always or everysec", cfg.Fsync)
	}
	if cfg.ShrinkMinSize <= 0 {
		cfg.ShrinkMinSize = 32 << 20
	}
	if cfg.ShrinkRatio <= 1 {
		cfg.ShrinkRatio = 2
	}
	if cfg.ShrinkInterval <= 0 {
		cfg.ShrinkInterval = time.Minute
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("persistence: create data directory: %w", err)
	}
	lockf, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(cfg.Dir, FileName)
	// A compaction interrupted by a crash leaves its unfinished copy (ours
	// at start-up, buntdb's from Shrink); the database file is intact.
	for _, tmp := range []string{path + compactSuffix, path + ".tmp"} {
		if err := os.Remove(tmp); err == nil {
			log.Info("removed the copy of an interrupted compaction", "file", tmp)
		}
	}
	var before int64 = -1
	if fi, err := os.Stat(path); err == nil {
		before = fi.Size()
	}
	db, err := openConfigured(path)
	if err != nil {
		_ = lockf.Close()
		return nil, err
	}
	s := &Store{
		db:    db,
		path:  path,
		cfg:   cfg,
		log:   log,
		lockf: lockf,
		kick:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
		cur:   newBatch(),
		next:  newBatch(),
	}
	size := s.fileSize()
	if before > size {
		s.stats.truncated.Store(before - size)
		log.Warn("dropped an incomplete write at the end of the store (torn by a crash; it was never acknowledged)",
			"file", path, "bytes", before-size)
	}
	if err := s.compactAtOpen(size); err != nil {
		if s.db == nil {
			_ = lockf.Close()
			return nil, err
		}
		log.Warn("store compaction at start-up failed; continuing with the file as it is", "file", path, "error", err)
	}
	if err := s.reopenSyncHandle(); err != nil {
		_ = s.db.Close()
		_ = lockf.Close()
		return nil, err
	}
	s.wg.Add(2)
	go s.writer()
	go s.maintenance()
	return s, nil
}

// openConfigured opens the database file and takes over syncing and
// compaction from buntdb.
func openConfigured(path string) (*buntdb.DB, error) {
	db, err := openDB(path)
	if err != nil {
		if errors.Is(err, buntdb.ErrInvalid) {
			return nil, fmt.Errorf("persistence: %s is corrupt (%v): refusing to start with a damaged store; move the file aside to start empty, or restore it from a backup", path, err)
		}
		return nil, fmt.Errorf("persistence: open %s: %w", path, err)
	}
	// Group commit and fsync are ours: buntdb's own syncing swallows fsync
	// errors, and its background shrink does not fsync the new file.
	if err := db.SetConfig(buntdb.Config{SyncPolicy: buntdb.Never, AutoShrinkDisabled: true}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("persistence: configure %s: %w", path, err)
	}
	return db, nil
}

// compactSuffix names the compacted copy written at start-up until it
// replaces the database file.
const compactSuffix = ".compact"

// compactAtOpen applies the compaction policy to the file just loaded (size
// bytes). The periodic check only compares the file with its size after
// the previous compaction, which a restart forgets, and it first runs one
// ShrinkInterval after start: a broker restarted more often than that
// would never compact, and every restart would load more dead records.
//
// Nothing writes yet, so the compaction here is the safe kind, unlike
// buntdb's Shrink (which renames a copy it never fsynced over the file): the
// live records are written to a new file, which is fsynced, renamed over the
// database file and the directory fsynced; a crash at any point leaves
// either the old file or the complete new one. The database is then
// reopened on the new file.
//
// It sets the baseline of the periodic check to the size of the live
// records. On an error the store goes on with the file it loaded, unless
// the database could not be reopened (s.db is nil then).
func (s *Store) compactAtOpen(size int64) error {
	var live countWriter
	if err := s.db.Save(&live); err != nil {
		s.lastSz.Store(size)
		return fmt.Errorf("persistence: measure live records: %w", err)
	}
	s.lastSz.Store(live.n)
	if !s.compactable(size, live.n) {
		return nil
	}
	start := time.Now()
	tmp := s.path + compactSuffix
	if err := writeSynced(tmp, s.db.Save); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	// buntdb marks the database closed even when closing its file fails;
	// the file is then reopened as it is.
	swapErr := s.db.Close()
	s.db = nil
	if swapErr == nil {
		swapErr = os.Rename(tmp, s.path)
	}
	if swapErr == nil {
		swapErr = syncDir(filepath.Dir(s.path))
	} else {
		_ = os.Remove(tmp)
	}
	db, err := openConfigured(s.path)
	if err != nil {
		return err
	}
	s.db = db
	if swapErr != nil {
		return fmt.Errorf("persistence: replace %s with its compacted copy: %w", s.path, swapErr)
	}
	after := s.fileSize()
	s.lastSz.Store(after)
	s.stats.shrinks.Add(1)
	s.log.Info("store compacted at start-up", "file", s.path, "before", size, "after", after, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// writeSynced creates name, fills it with write and fsyncs it.
func writeSynced(name string, write func(io.Writer) error) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("persistence: create %s: %w", name, err)
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("persistence: write %s: %w", name, err)
	}
	return nil
}

// countWriter counts the bytes written to it.
type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// openDB is buntdb.Open, except that a panic while loading a damaged file
// (buntdb v1.3.0 indexes a command name's first three bytes without checking
// its length) is reported as buntdb.ErrInvalid instead of crashing.
func openDB(path string) (db *buntdb.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", buntdb.ErrInvalid, r)
		}
	}()
	return buntdb.Open(path)
}

func lockDir(dir string) (*os.File, error) {
	name := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("persistence: open %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%w: %s (stop the other broker or choose another --data-dir)", ErrLocked, dir)
	}
	return f, nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Policy is the fsync policy in force.
func (s *Store) Policy() Fsync { return s.cfg.Fsync }

// DB gives read access to the database for scans. Writes must go through
// Write so that they are ordered and group-committed.
func (s *Store) DB() *buntdb.DB { return s.db }

// OnFatal sets a function called when the store can no longer write (a
// failed fsync: the kernel may have dropped the data, so nothing more can be
// acknowledged). The broker stops.
func (s *Store) OnFatal(fn func(error)) { s.onFatal = fn }

// OnSync sets fn to be called with the duration of every fsync (for a
// latency histogram). It runs on the store's writer goroutine: it must not
// block.
func (s *Store) OnSync(fn func(time.Duration)) { s.onSync.Store(&fn) }

// Write adds ops to the open batch and returns it; call Wait on it before
// acknowledging anything that depends on the ops.
func (s *Store) Write(ops ...Op) *Batch {
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		return closedBatch()
	}
	b := s.cur
	b.ops = append(b.ops, ops...)
	b.handed = true
	s.mu.Unlock()
	s.signal()
	return b
}

// WriteAfter adds ops to the batch after the open one, so they are committed
// strictly after everything written so far is durable. A crash can apply any
// subset of one transaction (buntdb writes a transaction's records in map
// order), so "record B may exist only if record A does" needs A and B in
// different batches: write A, then WriteAfter B.
func (s *Store) WriteAfter(ops ...Op) *Batch {
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		return closedBatch()
	}
	b := s.next
	b.ops = append(b.ops, ops...)
	b.handed = true
	s.mu.Unlock()
	s.signal()
	return b
}

// Afterwards runs fn once b is committed, on the writer goroutine after the
// commit, with its error. fn must not block.
func (s *Store) Afterwards(b *Batch, fn func(error)) {
	s.mu.Lock()
	if b == s.cur || b == s.next {
		b.afterwards = append(b.afterwards, fn)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	<-b.done // being committed right now, or already done
	fn(b.err)
}

func (s *Store) signal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// writer commits batches in order until Close.
func (s *Store) writer() {
	defer s.wg.Done()
	for {
		select {
		case <-s.kick:
		case <-s.quit:
			// Drain what was submitted before Close.
			for s.commitOne() {
			}
			return
		}
		for s.commitOne() {
		}
	}
}

// commitOne commits the open batch if it has work (or waiters) and reports
// whether it did.
func (s *Store) commitOne() bool {
	s.mu.Lock()
	b := s.cur
	if len(b.ops) == 0 && !b.handed && len(s.next.ops) == 0 && !s.next.handed && len(b.afterwards) == 0 {
		s.mu.Unlock()
		return false
	}
	s.cur = s.next
	s.next = newBatch()
	s.mu.Unlock()

	b.err = s.commit(b.ops)
	close(b.done)
	for _, fn := range b.afterwards {
		fn(b.err)
	}
	return true
}

func (s *Store) commit(ops []Op) error {
	if len(ops) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *buntdb.Tx) error {
		for _, op := range ops {
			if op.Del {
				if op.IfEq {
					if cur, err := tx.Get(op.Key); err != nil || cur != op.Value {
						continue
					}
				}
				if _, err := tx.Delete(op.Key); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
					return err
				}
				continue
			}
			if _, _, err := tx.Set(op.Key, op.Value, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("store commit failed", "error", err, "records", len(ops))
		return fmt.Errorf("persistence: commit: %w", err)
	}
	s.stats.commits.Add(1)
	s.stats.records.Add(uint64(len(ops)))
	s.dirty.Store(true)
	if s.cfg.Fsync == FsyncAlways {
		return s.sync()
	}
	return nil
}

// sync fsyncs the database file. A failed fsync is fatal for durability:
// after it the page cache may have dropped the data (fsyncgate), so the
// store refuses further acknowledgements by reporting the error.
func (s *Store) sync() error {
	if !s.dirty.Swap(false) {
		return nil
	}
	s.syncMu.Lock()
	start := time.Now()
	err := s.syncf.Sync()
	d := time.Since(start)
	s.syncMu.Unlock()
	s.stats.syncs.Add(1)
	if fn := s.onSync.Load(); fn != nil {
		(*fn)(d)
	}
	s.stats.lastSync.Store(int64(d))
	s.stats.totalSync.Add(int64(d))
	for {
		m := s.stats.maxSync.Load()
		if int64(d) <= m || s.stats.maxSync.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	if err != nil {
		s.stats.syncErrors.Add(1)
		s.log.Error("store fsync failed: data may not be on disk; stopping acknowledgements", "error", err, "file", s.path)
		if s.onFatal != nil {
			s.onFatal(err)
		}
		return fmt.Errorf("persistence: fsync %s: %w", s.path, err)
	}
	return nil
}

// maintenance fsyncs once a second under FsyncEverySecond and runs the
// compaction policy.
func (s *Store) maintenance() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastCheck := time.Now()
	for {
		select {
		case <-s.quit:
			return
		case <-tick.C:
		}
		if s.cfg.Fsync == FsyncEverySecond {
			_ = s.sync()
		}
		if time.Since(lastCheck) >= s.cfg.ShrinkInterval {
			lastCheck = time.Now()
			if s.shouldShrink() {
				if err := s.Shrink(); err != nil {
					s.log.Warn("store compaction failed", "error", err)
				}
			}
		}
	}
}

func (s *Store) shouldShrink() bool {
	return s.compactable(s.fileSize(), s.lastSz.Load())
}

// compactable is the compaction policy: the file is over ShrinkMinSize and
// more than ShrinkRatio times the size compaction would leave (measured at
// the previous compaction, or at open).
func (s *Store) compactable(size, compacted int64) bool {
	return size > s.cfg.ShrinkMinSize && float64(size) > float64(compacted)*s.cfg.ShrinkRatio
}

// Shrink compacts the database file (rewrites only live records), then
// fsyncs the new file and its directory.
func (s *Store) Shrink() error {
	before := s.fileSize()
	start := time.Now()
	if err := s.db.Shrink(); err != nil {
		return fmt.Errorf("persistence: shrink: %w", err)
	}
	if err := s.reopenSyncHandle(); err != nil {
		return err
	}
	s.dirty.Store(true)
	if err := s.sync(); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return err
	}
	after := s.fileSize()
	s.lastSz.Store(after)
	s.stats.shrinks.Add(1)
	s.log.Info("store compacted", "file", s.path, "before", before, "after", after, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (s *Store) reopenSyncHandle() error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("persistence: open %s for fsync: %w", s.path, err)
	}
	s.syncMu.Lock()
	old := s.syncf
	s.syncf = f
	s.syncMu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("persistence: open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("persistence: fsync directory %s: %w", dir, err)
	}
	return nil
}

func (s *Store) fileSize() int64 {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	st := Stats{
		Commits:       s.stats.commits.Load(),
		Records:       s.stats.records.Load(),
		Syncs:         s.stats.syncs.Load(),
		SyncErrors:    s.stats.syncErrors.Load(),
		LastSync:      time.Duration(s.stats.lastSync.Load()),
		MaxSync:       time.Duration(s.stats.maxSync.Load()),
		TotalSync:     time.Duration(s.stats.totalSync.Load()),
		Shrinks:       s.stats.shrinks.Load(),
		FileSize:      s.fileSize(),
		TruncatedTail: s.stats.truncated.Load(),
	}
	if !s.closed.Load() {
		_ = s.db.View(func(tx *buntdb.Tx) error {
			n, err := tx.Len()
			st.Keys = n
			return err
		})
	}
	return st
}

// Flush commits everything submitted so far and fsyncs, whatever the policy.
func (s *Store) Flush() error {
	done := make(chan error, 1)
	s.Afterwards(s.Write(), func(err error) { done <- err })
	s.signal()
	if err := <-done; err != nil {
		return err
	}
	s.dirty.Store(true)
	return s.sync()
}

// Close commits and fsyncs everything submitted, then closes the database.
// It is idempotent.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		s.shut = true
		s.mu.Unlock()
		close(s.quit)
		s.wg.Wait()
		s.closed.Store(true)
		s.dirty.Store(true)
		err = s.sync()
		if cerr := s.db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("persistence: close %s: %w", s.path, cerr)
		}
		s.syncMu.Lock()
		_ = s.syncf.Close()
		s.syncMu.Unlock()
		_ = s.lockf.Close()
	})
	return err
}

// Get reads one key. ok is false when the key does not exist.
func (s *Store) Get(key string) (val string, ok bool, err error) {
	err = s.db.View(func(tx *buntdb.Tx) error {
		v, err := tx.Get(key)
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		val, ok = v, true
		return nil
	})
	return val, ok, err
}

// Scan calls fn for every key with the given prefix, in key order, until fn
// returns false.
func (s *Store) Scan(prefix string, fn func(key, val string) bool) error {
	return s.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendGreaterOrEqual("", prefix, func(k, v string) bool {
			if !strings.HasPrefix(k, prefix) {
				return false
			}
			return fn(k, v)
		})
	})
}

// ScanRange calls fn for keys in [from, to) in key order until fn returns false.
func (s *Store) ScanRange(from, to string, fn func(key, val string) bool) error {
	return s.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendRange("", from, to, fn)
	})
}
