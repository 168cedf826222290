package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// MaxBcryptCost is the highest bcrypt cost ParseUsers accepts. Each login
// runs one bcrypt comparison, and every +1 doubles its CPU time, so a
// runaway cost in the password file would turn CONNECT into a denial of
// service.
const MaxBcryptCost = 16

// maxPasswordLen is bcrypt's input limit; longer passwords are refused
// rather than silently truncated.
const maxPasswordLen = 72

// ErrNoSuchUser is wrapped by DeleteUser when the user is not in the file.
var ErrNoSuchUser = errors.New("no such user")

// bcryptHashRE matches the modular-crypt form of a bcrypt hash as written by
// Go's bcrypt, htpasswd -B and OpenBSD: $2a$, $2b$ or $2y$, two cost digits
// and 53 characters of salt and hash.
var bcryptHashRE = regexp.MustCompile(`^\$2[aby]?\$[0-9]{2}\$[./A-Za-z0-9]{53}$`)

type userEntry struct {
	hash  []byte
	roles []string
}

// Users is a parsed password file. It is immutable and safe for concurrent
// use; reload by parsing the file again.
type Users struct {
	users   map[string]userEntry
	maxCost int // highest cost in the file, used for the unknown-user dummy
}

// ValidateUsername reports whether name is acceptable as a username in the
// password file (and therefore as a "user NAME" subject in the ACL file).
// A username must be non-empty valid UTF-8 of at most 65535 bytes and must
// not contain ':' (the field separator), white space, control characters,
// or the MQTT topic characters '+', '#' and '/' (so %u in an ACL pattern can
// never widen a topic filter).
func ValidateUsername(name string) error {
	switch {
	case name == "":
		return errors.New("username is empty")
	case len(name) > 65535:
		return errors.New("username is longer than 65535 bytes (MQTT's limit)")
	case !utf8.ValidString(name):
		return errors.New("username is not valid UTF-8")
	}
	for _, c := range name {
		switch {
		case c == ':':
			return fmt.Errorf("username %q contains ':', which separates fields in the password file; pick a name without it", name)
		case c == '+' || c == '#' || c == '/':
			return fmt.Errorf("username %q contains %q, an MQTT topic character; pick a name without '+', '#' or '/'", name, c)
		case unicode.IsSpace(c) || unicode.IsControl(c):
			return fmt.Errorf("username %q contains white space or a control character; pick a name without them", name)
		}
	}
	return nil
}

// validateRole reports whether role is acceptable in the roles field.
func validateRole(role string) error {
	if role == "" {
		return errors.New("empty role name (check for a stray ',')")
	}
	if !utf8.ValidString(role) {
		return errors.New("role name is not valid UTF-8")
	}
	for _, c := range role {
		if c == ':' || c == ',' || unicode.IsSpace(c) || unicode.IsControl(c) {
			return fmt.Errorf("role %q contains ':', ',', white space or a control character; pick a name without them", role)
		}
	}
	return nil
}

// validateHash checks that hash is a usable bcrypt hash and returns its cost.
func validateHash(hash string) (int, error) {
	if !bcryptHashRE.MatchString(hash) {
		return 0, errors.New("password hash is not a bcrypt hash ($2a$, $2b$ or $2y$ followed by cost and 53 characters); " +
			"set the password with the passwd tool or generate a line with: htpasswd -nbB USER PASSWORD")
	}
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		return 0, fmt.Errorf("password hash is not a valid bcrypt hash (%v); set the password again", err)
	}
	if cost > MaxBcryptCost {
		return 0, fmt.Errorf("bcrypt cost %d is above the maximum of %d (every login would burn seconds of CPU); set the password again with cost %d", cost, MaxBcryptCost, bcrypt.DefaultCost)
	}
	return cost, nil
}

// passwdLine is one parsed, non-comment line of a password file.
type passwdLine struct {
	user, hash string
	roles      []string
}

// parsePasswdLine parses "username:hash[:role1,role2]" (already trimmed).
func parsePasswdLine(line string) (passwdLine, error) {
	var pl passwdLine
	fields := strings.Split(line, ":")
	if len(fields) < 2 || len(fields) > 3 {
		return pl, errors.New(`expected "username:bcrypt-hash" or "username:bcrypt-hash:role1,role2"`)
	}
	pl.user, pl.hash = fields[0], fields[1]
	if err := ValidateUsername(pl.user); err != nil {
		return pl, err
	}
	if _, err := validateHash(pl.hash); err != nil {
		return pl, fmt.Errorf("user %q: %w", pl.user, err)
	}
	if len(fields) == 3 && strings.TrimSpace(fields[2]) != "" {
		for _, r := range strings.Split(fields[2], ",") {
			r = strings.TrimSpace(r)
			if err := validateRole(r); err != nil {
				return pl, fmt.Errorf("user %q: %w", pl.user, err)
			}
			if !slices.Contains(pl.roles, r) {
				pl.roles = append(pl.roles, r)
			}
		}
	}
	return pl, nil
}

// ParseUsers reads a password file: one user per line as
//
//	username:bcrypt-hash[:role1,role2]
//
// Blank lines and lines starting with '#' are ignored; surrounding white
// space and a trailing '\r' are stripped. name is used in error messages,
// which look like "passwd:4: user "bob": ...". A username may appear only
// once.
func ParseUsers(r io.Reader, name string) (*Users, error) {
	u := &Users{users: make(map[string]userEntry)}
	firstLine := make(map[string]int)
	sc := newLineScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, skip := cleanLine(sc.Text(), n == 1)
		if skip {
			continue
		}
		pl, err := parsePasswdLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if prev, dup := firstLine[pl.user]; dup {
			return nil, fmt.Errorf("%s:%d: user %q is already defined on line %d; delete one of the lines", name, n, pl.user, prev)
		}
		firstLine[pl.user] = n
		cost, _ := bcrypt.Cost([]byte(pl.hash)) // validated above
		u.maxCost = max(u.maxCost, cost)
		u.users[pl.user] = userEntry{hash: []byte(pl.hash), roles: pl.roles}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: reading password file: %w", name, err)
	}
	return u, nil
}

// LoadUsers reads the password file at path (see ParseUsers).
func LoadUsers(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("password file: %w", err)
	}
	defer f.Close()
	return ParseUsers(f, path)
}

// Len returns the number of users.
func (u *Users) Len() int {
	if u == nil {
		return 0
	}
	return len(u.users)
}

// Check verifies username and password and returns the user's roles (a
// copy). For an unknown user it still runs a bcrypt comparison against a
// dummy hash of the same cost, so response time does not reveal which
// usernames exist. Passwords longer than 72 bytes never match.
func (u *Users) Check(username, password string) (roles []string, ok bool) {
	var e userEntry
	var known bool
	if u != nil {
		e, known = u.users[username]
	}
	if !known {
		cost := bcrypt.DefaultCost
		if u != nil && u.maxCost > 0 {
			cost = u.maxCost
		}
		_ = bcrypt.CompareHashAndPassword(dummyHash(cost), []byte(password))
		return nil, false
	}
	if len(password) > maxPasswordLen {
		// Still spend the time, and never match: bcrypt would otherwise
		// truncate (or refuse) long inputs.
		_ = bcrypt.CompareHashAndPassword(e.hash, []byte(password[:maxPasswordLen]))
		return nil, false
	}
	if bcrypt.CompareHashAndPassword(e.hash, []byte(password)) != nil {
		return nil, false
	}
	return slices.Clone(e.roles), true
}

var (
	dummyMu     sync.Mutex
	dummyHashes = map[int][]byte{}
)

// dummyHash returns a bcrypt hash of a random-ish password at cost, created
// on first use and cached.
func dummyHash(cost int) []byte {
	dummyMu.Lock()
	defer dummyMu.Unlock()
	if h, ok := dummyHashes[cost]; ok {
		return h
	}
	h, err := bcrypt.GenerateFromPassword([]byte("mote-dummy-password-for-timing"), cost)
	if err != nil {
		// Cannot happen for costs accepted by ParseUsers; fall back to
		// the default cost rather than skip the work.
		h, _ = bcrypt.GenerateFromPassword([]byte("mote-dummy-password-for-timing"), bcrypt.DefaultCost)
	}
	dummyHashes[cost] = h
	return h
}

// HashPassword returns the bcrypt hash (cost bcrypt.DefaultCost = 10) of
// password, as stored in the password file.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("password is empty; choose a non-empty password")
	}
	if len(password) > maxPasswordLen {
		return "", fmt.Errorf("password is %d bytes; bcrypt uses at most %d, choose a shorter one", len(password), maxPasswordLen)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return string(h), nil
}

// SetPassword creates or updates username in the password file at path.
// Other lines, comments and the user's roles are kept byte for byte; a new
// user is appended. The file is created with mode 0600 if missing; an
// existing file keeps its mode. The write is atomic (temporary file in the
// same directory, fsync, rename), and a symlink at path is followed.
func SetPassword(path, username, password string) error {
	if err := ValidateUsername(username); err != nil {
		return err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	return rewritePasswd(path, true, func(lines []string) ([]string, error) {
		found := false
		out := lines[:0:0]
		for _, raw := range lines {
			pl, ok := userOfLine(raw)
			if !ok || pl.user != username {
				out = append(out, raw)
				continue
			}
			if found {
				continue // drop a duplicate definition
			}
			found = true
			nl := username + ":" + hash
			if len(pl.roles) > 0 {
				nl += ":" + strings.Join(pl.roles, ",")
			}
			out = append(out, nl)
		}
		if !found {
			out = append(out, username+":"+hash)
		}
		return out, nil
	})
}

// DeleteUser removes username from the password file at path, keeping every
// other line. It returns an error wrapping ErrNoSuchUser if the user is not
// there (or the file does not exist).
func DeleteUser(path, username string) error {
	return rewritePasswd(path, false, func(lines []string) ([]string, error) {
		out := lines[:0:0]
		for _, raw := range lines {
			if pl, ok := userOfLine(raw); ok && pl.user == username {
				continue
			}
			out = append(out, raw)
		}
		if len(out) == len(lines) {
			return nil, fmt.Errorf("%s: user %q: %w", path, username, ErrNoSuchUser)
		}
		return out, nil
	})
}

// userOfLine extracts the username and roles of a raw password-file line,
// tolerating an invalid hash (so SetPassword can repair it). ok is false for
// comments and blank lines.
func userOfLine(raw string) (passwdLine, bool) {
	line, skip := cleanLine(raw, true) // a BOM can only be on line 1, but is never part of a name
	if skip {
		return passwdLine{}, false
	}
	fields := strings.SplitN(line, ":", 3)
	pl := passwdLine{user: fields[0]}
	if len(fields) == 3 {
		for _, r := range strings.Split(fields[2], ",") {
			if r = strings.TrimSpace(r); r != "" {
				pl.roles = append(pl.roles, r)
			}
		}
	}
	return pl, true
}

// rewritePasswd reads the file at path as lines, applies edit and writes the
// result back atomically. If the file is missing it is treated as empty when
// create is true, and as containing no users otherwise.
func rewritePasswd(path string, create bool, edit func([]string) ([]string, error)) error {
	target := path
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		target = resolved
	}
	mode := fs.FileMode(0o600)
	data, err := os.ReadFile(target)
	switch {
	case err == nil:
		if fi, err := os.Stat(target); err == nil {
			mode = fi.Mode().Perm()
		}
	case errors.Is(err, fs.ErrNotExist):
		if !create {
			return fmt.Errorf("%s: %w", path, ErrNoSuchUser)
		}
	default:
		return fmt.Errorf("reading password file: %w", err)
	}
	var lines []string
	eol := "\n"
	if len(data) > 0 {
		lines = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if strings.HasSuffix(lines[0], "\r") {
			eol = "\r\n" // keep a CRLF file CRLF
			for i := range lines {
				lines[i] = strings.TrimSuffix(lines[i], "\r")
			}
		}
	}
	lines, err = edit(lines)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString(l)
		buf.WriteString(eol)
	}
	return writeFileAtomic(target, buf.Bytes(), mode)
}

// writeFileAtomic writes data to a temporary file next to path, syncs it and
// renames it over path, so readers see either the old or the new file.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(mode); err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	// Make the rename durable; failure here is not fatal to correctness.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
