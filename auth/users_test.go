package auth

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func writeFile(t testing.TB, path, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
}

// Test hashes are made once at bcrypt.MinCost to keep the suite fast.
var (
	hashOnce            sync.Once
	hashSecret, hashPwd string
)

func testHashes(t testing.TB) (secret, pwd string) {
	hashOnce.Do(func() {
		h1, err1 := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
		h2, err2 := bcrypt.GenerateFromPassword([]byte("pwd"), bcrypt.MinCost)
		if err1 != nil || err2 != nil {
			panic("bcrypt failed")
		}
		hashSecret, hashPwd = string(h1), string(h2)
	})
	return hashSecret, hashPwd
}

func TestParseUsersAndCheck(t *testing.T) {
	hs, hp := testHashes(t)
	text := "\ufeff# users\r\n" +
		"alice:" + hs + ":ops, admin ,ops\r\n" +
		"\n" +
		"   # indented comment\n" +
		"  bob:" + hp + "  \n" +
		"carol:" + hp + ":\n" +
		"$weird%name:" + hp + "\n"
	u, err := ParseUsers(strings.NewReader(text), "passwd")
	if err != nil {
		t.Fatal(err)
	}
	if u.Len() != 4 {
		t.Fatalf("Len = %d, want 4", u.Len())
	}
	roles, ok := u.Check("alice", "secret")
	if !ok || !slices.Equal(roles, []string{"ops", "admin"}) {
		t.Errorf("Check(alice) = %v, %v; want [ops admin], true", roles, ok)
	}
	roles[0] = "mutated"
	if again, _ := u.Check("alice", "secret"); again[0] != "ops" {
		t.Error("Check returned the internal roles slice")
	}
	for _, tc := range []struct {
		user, pass string
		want       bool
	}{
		{"bob", "pwd", true},
		{"carol", "pwd", true},
		{"$weird%name", "pwd", true},
		{"alice", "wrong", false},
		{"alice", "", false},
		{"bob", "secret", false},
		{"nobody", "pwd", false},
		{"", "", false},
		{"Alice", "secret", false},
		{"alice", "secret" + strings.Repeat("x", 80), false},
	} {
		if _, ok := u.Check(tc.user, tc.pass); ok != tc.want {
			t.Errorf("Check(%q, %q) = %v, want %v", tc.user, tc.pass, ok, tc.want)
		}
	}
	var nilUsers *Users
	if _, ok := nilUsers.Check("alice", "secret"); ok || nilUsers.Len() != 0 {
		t.Error("nil *Users must reject everyone")
	}
}

// TestCheckLongPasswordNoTruncation makes sure a password that shares the
// first 72 bytes with the real one does not match.
func TestCheckLongPasswordNoTruncation(t *testing.T) {
	pw := strings.Repeat("p", 72)
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParseUsers(strings.NewReader("u:"+string(h)), "p")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Check("u", pw); !ok {
		t.Error("72-byte password must match")
	}
	if _, ok := u.Check("u", pw+"extra"); ok {
		t.Error("longer password must not match via truncation")
	}
}

func TestParseUsersErrors(t *testing.T) {
	hs, _ := testHashes(t)
	costly := "$2a$17$" + hs[7:]
	for _, tc := range []struct{ text, want string }{
		{"alice", `passwd:1: expected "username:bcrypt-hash"`},
		{"# c\n\nalice:" + hs + ":ops:extra", `passwd:3: expected "username:bcrypt-hash"`},
		{":" + hs, "passwd:1: username is empty"},
		{"al ice:" + hs, "passwd:1: username \"al ice\" contains white space"},
		{"a+b:" + hs, `contains '+'`},
		{"a#b:" + hs, `contains '#'`},
		{"a/b:" + hs, `contains '/'`},
		{"a\x01b:" + hs, "control character"},
		{"\xff:" + hs, "not valid UTF-8"},
		{"alice:plaintext", `passwd:1: user "alice": password hash is not a bcrypt hash`},
		{"alice:" + hs[:59], "not a bcrypt hash"},
		{"alice:$1$abc$def", "not a bcrypt hash"},
		{"alice:" + costly, "bcrypt cost 17 is above the maximum"},
		{"alice:" + hs + ":ops,,dev", `passwd:1: user "alice": empty role name`},
		{"alice:" + hs + ":o p", `role "o p" contains`},
		{"alice:" + hs + "\nbob:" + hs + "\nalice:" + hs, `passwd:3: user "alice" is already defined on line 1`},
		{strings.Repeat("x", maxLineLen+1), "passwd: reading password file"},
	} {
		_, err := ParseUsers(strings.NewReader(tc.text), "passwd")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseUsers(%.50q) error = %v, want %q", tc.text, err, tc.want)
		}
	}
}

func TestParseUsersAcceptsHtpasswdVariants(t *testing.T) {
	hs, _ := testHashes(t)
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		line := "u:" + prefix + hs[4:]
		u, err := ParseUsers(strings.NewReader(line), "p")
		if err != nil {
			t.Errorf("%s: %v", prefix, err)
			continue
		}
		if _, ok := u.Check("u", "secret"); !ok {
			t.Errorf("%s hash does not verify", prefix)
		}
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("hunter2")
	if err != nil {
		t.Fatal(err)
	}
	if cost, _ := bcrypt.Cost([]byte(h)); cost != bcrypt.DefaultCost {
		t.Errorf("cost = %d, want %d", cost, bcrypt.DefaultCost)
	}
	if bcrypt.CompareHashAndPassword([]byte(h), []byte("hunter2")) != nil {
		t.Error("hash does not verify")
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("empty password accepted")
	}
	if _, err := HashPassword(strings.Repeat("x", 73)); err == nil || !strings.Contains(err.Error(), "shorter") {
		t.Errorf("73-byte password error = %v", err)
	}
}

func TestSetPasswordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")

	// Creating a new file: mode 0600.
	if err := SetPassword(path, "alice", "one"); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("new file mode = %v, want 0600", fi.Mode().Perm())
		}
	}

	// Add comments, roles and another user by hand; then update alice and
	// add carol: everything else must be kept.
	_, hp := testHashes(t)
	data, _ := os.ReadFile(path)
	aliceLine := strings.TrimSpace(string(data))
	manual := "# Mote users\n" +
		aliceLine + ":ops,admin\n" +
		"\n" +
		"# bob is a service\n" +
		"bob:" + hp + ":svc\n"
	writeFile(t, path, manual, 0o640)
	if err := SetPassword(path, "alice", "two"); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "carol", "three"); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 6 || lines[0] != "# Mote users" || lines[2] != "" || lines[3] != "# bob is a service" ||
		lines[4] != "bob:"+hp+":svc" || !strings.HasPrefix(lines[1], "alice:$2a$10$") ||
		!strings.HasSuffix(lines[1], ":ops,admin") || !strings.HasPrefix(lines[5], "carol:$2a$") {
		t.Fatalf("file after SetPassword:\n%s", data)
	}
	if fi, _ := os.Stat(path); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o640 {
		t.Errorf("existing file mode changed to %v", fi.Mode().Perm())
	}
	u, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if roles, ok := u.Check("alice", "two"); !ok || !slices.Equal(roles, []string{"ops", "admin"}) {
		t.Errorf("alice after update: %v %v", roles, ok)
	}
	if _, ok := u.Check("alice", "one"); ok {
		t.Error("old password still works")
	}
	if _, ok := u.Check("carol", "three"); !ok {
		t.Error("carol not added")
	}
	if _, ok := u.Check("bob", "pwd"); !ok {
		t.Error("bob lost")
	}

	// No temporary files left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory has %d entries, want only passwd", len(entries))
	}

	// DeleteUser keeps the rest.
	if err := DeleteUser(path, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := DeleteUser(path, "alice"); !errors.Is(err, ErrNoSuchUser) {
		t.Errorf("second delete error = %v, want ErrNoSuchUser", err)
	}
	u, err = LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if u.Len() != 2 {
		t.Errorf("Len after delete = %d, want 2", u.Len())
	}
	data, _ = os.ReadFile(path)
	if !strings.Contains(string(data), "# bob is a service\nbob:") {
		t.Errorf("comments lost on delete:\n%s", data)
	}
}

func TestSetPasswordRepairsAndDedups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	_, hp := testHashes(t)
	writeFile(t, path, "alice:broken-hash:ops\r\nbob:"+hp+"\r\nalice:"+hp+"\r\n", 0o600)
	if _, err := LoadUsers(path); err == nil {
		t.Fatal("broken file loaded")
	}
	if err := SetPassword(path, "alice", "fixed"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if strings.Count(string(data), "alice:") != 1 || strings.Count(string(data), "\r\n") != 2 {
		t.Errorf("expected one alice line and CRLF kept:\n%q", data)
	}
	u, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if roles, ok := u.Check("alice", "fixed"); !ok || !slices.Equal(roles, []string{"ops"}) {
		t.Errorf("alice: %v %v", roles, ok)
	}
}

func TestSetPasswordFollowsSymlink(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	writeFile(t, real, "", 0o600)
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(link, "alice", "pw"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("symlink replaced by a file")
	}
	if u, err := LoadUsers(real); err != nil || u.Len() != 1 {
		t.Errorf("target not updated: %v", err)
	}
}

func TestSetPasswordErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	if err := SetPassword(path, "a:b", "pw"); err == nil || !strings.Contains(err.Error(), "':'") {
		t.Errorf("bad username error = %v", err)
	}
	if err := SetPassword(path, "alice", ""); err == nil {
		t.Error("empty password accepted")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Error("file created despite errors")
	}
	if err := DeleteUser(path, "alice"); !errors.Is(err, ErrNoSuchUser) {
		t.Errorf("DeleteUser on missing file = %v", err)
	}
	if err := SetPassword(filepath.Join(dir, "missing-dir", "passwd"), "alice", "pw"); err == nil {
		t.Error("SetPassword into a missing directory succeeded")
	}
	if _, err := LoadUsers(path); err == nil || !strings.Contains(err.Error(), "password file") {
		t.Errorf("LoadUsers missing = %v", err)
	}
}

func TestValidateUsername(t *testing.T) {
	for _, ok := range []string{"alice", "bob.smith@example.com", "$x", "100%", "ünïcode"} {
		if err := ValidateUsername(ok); err != nil {
			t.Errorf("ValidateUsername(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a:b", "a b", "a\tb", "a+", "#", "a/b", "\x00", "a\u0085b", strings.Repeat("x", 65536)} {
		if err := ValidateUsername(bad); err == nil {
			t.Errorf("ValidateUsername(%q) accepted", bad)
		}
	}
}
