package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/motemq/mote/auth"
)

// passwd implements `mote passwd [--password-stdin | --delete] FILE USER`:
// it writes a bcrypt hash (never the password) into the password file,
// creating it with mode 0600, or deletes the user.
func passwd(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	del := fs.Bool("delete", false, "delete the user instead")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mote passwd [--password-stdin | --delete] FILE USER")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	file, user := fs.Arg(0), fs.Arg(1)
	if err := auth.ValidateUsername(user); err != nil {
		fmt.Fprintln(stderr, "mote passwd:", err)
		return 2
	}
	if *del {
		if err := auth.DeleteUser(file, user); err != nil {
			fmt.Fprintln(stderr, "mote passwd:", err)
			return 1
		}
		fmt.Fprintf(stdout, "deleted %s from %s (send SIGHUP to a running broker, or wait for it to notice)\n", user, file)
		return 0
	}
	pw, err := readPassword(stdin, stderr, *fromStdin)
	if err != nil {
		fmt.Fprintln(stderr, "mote passwd:", err)
		return 2
	}
	if err := auth.SetPassword(file, user, pw); err != nil {
		fmt.Fprintln(stderr, "mote passwd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "set the password of %s in %s\n", user, file)
	return 0
}

func readPassword(stdin *os.File, stderr io.Writer, fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", fmt.Errorf("--password-stdin: no password on standard input")
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", errors.New("--password-stdin: the password is empty")
		}
		return pw, nil
	}
	fd := int(stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("standard input is not a terminal: use --password-stdin to pipe the password in")
	}
	fmt.Fprint(stderr, "Password: ")
	a, err := term.ReadPassword(fd)
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(stderr, "Repeat password: ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	if string(a) != string(b) {
		return "", errors.New("the passwords do not match")
	}
	if len(a) == 0 {
		return "", errors.New("the password is empty")
	}
	return string(a), nil
}
