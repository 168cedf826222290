package auth

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
)

// maxLineLen bounds a single line of the password and ACL files.
const maxLineLen = 1 << 20

// newLineScanner returns a scanner over r that accepts lines up to maxLineLen.
func newLineScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLineLen)
	return sc
}

// cleanLine strips a UTF-8 BOM (first line only), a trailing '\r' and
// surrounding white space, and reports whether what is left is a comment or
// blank.
func cleanLine(line string, first bool) (string, bool) {
	if first {
		line = strings.TrimPrefix(line, "\ufeff")
	}
	line = strings.TrimSpace(line)
	return line, line == "" || line[0] == '#'
}

// nextField splits s at the first run of white space.
func nextField(s string) (field, rest string) {
	s = strings.TrimLeftFunc(s, unicode.IsSpace)
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return s[:i], s[i:]
	}
	return s, ""
}

// ParseACL reads ACL rules, one per line:
//
//	allow|deny  SUBJECT  ACTION  TOPIC
//
// SUBJECT is "any", "anonymous", "user NAME" or "role NAME"; ACTION is
// "pub", "sub" or "all" (see ParseAction); TOPIC is the rest of the line with
// surrounding white space removed. Blank lines and lines whose first
// non-blank character is '#' are ignored. name is used in error messages,
// which look like "acl.conf:3: ...".
func ParseACL(r io.Reader, name string) ([]Rule, error) {
	var rules []Rule
	sc := newLineScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, skip := cleanLine(sc.Text(), n == 1)
		if skip {
			continue
		}
		rule, err := parseACLLine(line)
		if err == nil {
			err = rule.validate()
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		rules = append(rules, rule)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: reading ACL: %w", name, err)
	}
	return rules, nil
}

const aclSyntax = "expected \"allow|deny any|anonymous|user NAME|role NAME pub|sub|all TOPIC\""

func parseACLLine(line string) (Rule, error) {
	var r Rule
	verb, rest := nextField(line)
	switch strings.ToLower(verb) {
	case "allow":
		r.Allow = true
	case "deny":
	default:
		return r, fmt.Errorf("rule must start with allow or deny, not %q; %s", verb, aclSyntax)
	}
	subject, rest := nextField(rest)
	switch strings.ToLower(subject) {
	case "any":
	case "anonymous":
		r.Anonymous = true
	case "user", "role":
		var who string
		who, rest = nextField(rest)
		if who == "" {
			return r, fmt.Errorf("%q needs a name after it; %s", subject, aclSyntax)
		}
		if strings.ToLower(subject) == "user" {
			r.User = who
		} else {
			r.Role = who
		}
	case "":
		return r, fmt.Errorf("missing subject; %s", aclSyntax)
	default:
		return r, fmt.Errorf("unknown subject %q: use any, anonymous, user NAME or role NAME", subject)
	}
	action, rest := nextField(rest)
	if action == "" {
		return r, fmt.Errorf("missing action; %s", aclSyntax)
	}
	a, err := ParseAction(action)
	if err != nil {
		return r, err
	}
	r.Action = a
	r.Topic = strings.TrimSpace(rest)
	if r.Topic == "" {
		return r, fmt.Errorf("missing topic filter; %s (use '#' for every topic)", aclSyntax)
	}
	return r, nil
}

// LoadACL reads ACL rules from the file at path (see ParseACL).
func LoadACL(path string) ([]Rule, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("acl file: %w", err)
	}
	defer f.Close()
	return ParseACL(f, path)
}
