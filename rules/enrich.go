package rules

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/motemq/mote/persistence"
)

// --- enrich --------------------------------------------------------------------

type enrichAction struct {
	base
	table    string
	key      *program
	http     *httpLookup
	into     string
	required bool
}

func (a *enrichAction) do(x *exec, m *msg) (*msg, error) {
	obj, ok := m.value().(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the payload is %s, not an object", kind(m.value()))
	}
	var add map[string]any
	var found bool
	var what string
	if a.table != "" {
		v, err := a.key.run(m.env(a.key.needs))
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		var sb strings.Builder
		if err := appendText(&sb, v); err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		what = fmt.Sprintf("table %s key %q", a.table, sb.String())
		raw, ok, err := x.e.KVGet(a.table, sb.String())
		if err != nil {
			return nil, err
		}
		if ok {
			val, err := decodeJSON(raw)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			add, found = val.(map[string]any), true
		}
	} else {
		url, err := a.http.url.render(m.env(a.http.url.needs))
		if err != nil {
			return nil, fmt.Errorf("http.url: %w", err)
		}
		what = "GET " + url
		if add, found, err = a.http.get(x.e, url); err != nil {
			return nil, err
		}
	}
	if !found {
		if a.required {
			return nil, fmt.Errorf("%s: not found (required)", what)
		}
		return m, nil
	}
	out := maps.Clone(obj)
	if a.into != "" {
		out[a.into] = add
	} else {
		maps.Copy(out, add)
	}
	format := m.format
	if format == "" {
		format = fmtJSON
	}
	b, err := encodeAs(format, out)
	if err != nil {
		return nil, err
	}
	n := m.derive(b, format, out)
	n.ctype = contentType(format)
	return n, nil
}

// httpLookup is a cached GET returning a JSON object. Answers (404s as
// "not found") are cached for ttl; concurrent misses of one URL each make a
// request.
type httpLookup struct {
	url     *template
	timeout time.Duration
	ttl     time.Duration // <0: no cache
	size    int
	headers map[string]string
	cache   *lru
}

// maxLookupBody bounds an HTTP lookup's answer.
const maxLookupBody = 1 << 20

func (l *httpLookup) get(e *Engine, url string) (map[string]any, bool, error) {
	now := time.Now()
	if l.ttl > 0 {
		if v, ok := l.cache.get(url, now); ok {
			return v.obj, v.found, nil
		}
	}
	ctx, cancel := context.WithTimeout(e.ctx, l.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, false, fmt.Errorf("GET %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range l.headers {
		req.Header.Set(k, v)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	var ent lookup
	switch {
	case resp.StatusCode == http.StatusNotFound:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxLookupBody))
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxLookupBody+1))
		if err != nil {
			return nil, false, fmt.Errorf("GET %s: read: %w", url, err)
		}
		if len(b) > maxLookupBody {
			return nil, false, fmt.Errorf("GET %s: answer larger than %d bytes", url, maxLookupBody)
		}
		v, err := decodeJSON(b)
		if err != nil {
			return nil, false, fmt.Errorf("GET %s: %w", url, err)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false, fmt.Errorf("GET %s: answer is %s, not an object", url, kind(v))
		}
		ent = lookup{obj: obj, found: true}
	default:
		return nil, false, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if l.ttl > 0 {
		l.cache.put(url, ent, now.Add(l.ttl))
	}
	return ent.obj, ent.found, nil
}

type lookup struct {
	obj   map[string]any
	found bool
}

// lru is a size-bounded cache with expiry.
type lru struct {
	mu    sync.Mutex
	size  int
	order *list.List // front: most recently used
	items map[string]*list.Element
}

type lruEntry struct {
	key     string
	val     lookup
	expires time.Time
}

func newLRU(size int) *lru {
	return &lru{size: max(size, 1), order: list.New(), items: map[string]*list.Element{}}
}

func (c *lru) get(key string, now time.Time) (lookup, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return lookup{}, false
	}
	ent := el.Value.(*lruEntry)
	if now.After(ent.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return lookup{}, false
	}
	c.order.MoveToFront(el)
	return ent.val, true
}

func (c *lru) put(key string, val lookup, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		ent := el.Value.(*lruEntry)
		ent.val, ent.expires = val, expires
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&lruEntry{key: key, val: val, expires: expires})
	for c.order.Len() > c.size {
		el := c.order.Back()
		c.order.Remove(el)
		delete(c.items, el.Value.(*lruEntry).key)
	}
}

// --- enrich tables ----------------------------------------------------------------

// kvPrefix keys enrich table entries in the store: e␀{table}␀{key}.
const kvPrefix = "e\x00"

func kvKey(table, key string) string { return kvPrefix + table + "\x00" + key }

// ErrBadKV is returned for invalid table names, keys and values.
var ErrBadKV = errors.New("rules: invalid table entry")

func checkKVName(table string) error {
	switch {
	case table == "":
		return errors.New("table name missing")
	case len(table) > 128 || !utf8.ValidString(table) || strings.ContainsRune(table, 0):
		return fmt.Errorf("table name %q: want UTF-8 without NUL, at most 128 bytes", table)
	}
	return nil
}

func checkKV(table, key string) error {
	if err := checkKVName(table); err != nil {
		return fmt.Errorf("%w: %v", ErrBadKV, err)
	}
	if key == "" || !utf8.ValidString(key) || strings.ContainsRune(key, 0) || len(key) > 4096 {
		return fmt.Errorf("%w: key %q: want 1 to 4096 bytes of UTF-8 without NUL", ErrBadKV, key)
	}
	return nil
}

// KV is one entry of an enrich table.
type KV struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// KVGet reads an entry of an enrich table.
func (e *Engine) KVGet(table, key string) (json.RawMessage, bool, error) {
	if err := checkKV(table, key); err != nil {
		return nil, false, err
	}
	v, ok, err := e.store.Get(kvKey(table, key))
	if err != nil {
		return nil, false, fmt.Errorf("rules: read table %s: %w", table, err)
	}
	return json.RawMessage(v), ok, nil
}

// compactObject checks that v is one JSON object and returns it compact.
func compactObject(v []byte) ([]byte, error) {
	val, err := decodeJSON(v)
	if err != nil {
		return nil, fmt.Errorf("%w: value: %v", ErrBadKV, err)
	}
	if _, ok := val.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: value is %s; want a JSON object", ErrBadKV, kind(val))
	}
	return encodeJSON(val)
}

// KVSet sets an entry (value: a JSON object) and returns once it is durable.
func (e *Engine) KVSet(table, key string, value json.RawMessage) error {
	if err := checkKV(table, key); err != nil {
		return err
	}
	b, err := compactObject(value)
	if err != nil {
		return err
	}
	return e.store.Write(persistence.Set(kvKey(table, key), string(b))).Wait()
}

// KVDelete deletes an entry (no error if it does not exist) and returns once
// that is durable.
func (e *Engine) KVDelete(table, key string) error {
	if err := checkKV(table, key); err != nil {
		return err
	}
	return e.store.Write(persistence.Del(kvKey(table, key))).Wait()
}

// KVList returns a table's entries in key order.
func (e *Engine) KVList(table string) ([]KV, error) {
	if err := checkKVName(table); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKV, err)
	}
	prefix := kvPrefix + table + "\x00"
	var out []KV
	err := e.store.Scan(prefix, func(k, v string) bool {
		out = append(out, KV{Key: k[len(prefix):], Value: json.RawMessage(v)})
		return true
	})
	return out, err
}

// KVTables names the tables that have entries.
func (e *Engine) KVTables() ([]string, error) {
	var out []string
	err := e.store.Scan(kvPrefix, func(k, _ string) bool {
		t, _, _ := strings.Cut(k[len(kvPrefix):], "\x00")
		if len(out) == 0 || out[len(out)-1] != t {
			out = append(out, t)
		}
		return true
	})
	return out, err
}

// LoadTables replaces each named table with the contents of its file: one
// JSON object of key → object. Every file is read and checked before any
// table changes; the tables change in one transaction.
func (e *Engine) LoadTables(files map[string]string) error {
	var ops []persistence.Op
	var errs []error
	for _, table := range slices.Sorted(maps.Keys(files)) {
		path := files[table]
		o, err := e.tableOps(table, path)
		if err != nil {
			errs = append(errs, fmt.Errorf("tables.%s: %s: %w", table, path, err))
			continue
		}
		ops = append(ops, o...)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(ops) == 0 {
		return nil
	}
	return e.store.Write(ops...).Wait()
}

func (e *Engine) tableOps(table, path string) ([]persistence.Op, error) {
	if err := checkKVName(table); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, fmt.Errorf("want one JSON object of key → object: %w", err)
	}
	var ops []persistence.Op
	for _, k := range slices.Sorted(maps.Keys(entries)) {
		if err := checkKV(table, k); err != nil {
			return nil, err
		}
		v, err := compactObject(entries[k])
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		ops = append(ops, persistence.Set(kvKey(table, k), string(v)))
	}
	prefix := kvPrefix + table + "\x00"
	err = e.store.Scan(prefix, func(k, _ string) bool {
		if _, keep := entries[k[len(prefix):]]; !keep {
			ops = append(ops, persistence.Del(k))
		}
		return true
	})
	return ops, err
}
