package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// env is what expressions see. Fields an expression does not use are not
// filled (see needs): the payload is converted and parsed only when a rule
// that matched refers to it, and then once for all rules.
type env struct {
	Topic      string         `expr:"topic"`
	Levels     []string       `expr:"levels"`
	Payload    string         `expr:"payload"`
	JSON       any            `expr:"json"`
	QoS        int            `expr:"qos"`
	Retain     bool           `expr:"retain"`
	ClientID   string         `expr:"client_id"`
	Username   string         `expr:"username"`
	Properties map[string]any `expr:"properties"`
	Timestamp  time.Time      `expr:"timestamp"`
	Index      int            `expr:"index"`
}

// needs is the set of lazily filled env fields an expression refers to.
type needs uint8

const (
	needLevels needs = 1 << iota
	needPayload
	needJSON
	needProps
	needUser
	needTime
)

var needByName = map[string]needs{
	"levels":     needLevels,
	"payload":    needPayload,
	"json":       needJSON,
	"properties": needProps,
	"username":   needUser,
	"timestamp":  needTime,
}

type needVisitor struct{ n needs }

func (v *needVisitor) Visit(node *ast.Node) {
	if id, ok := (*node).(*ast.IdentifierNode); ok {
		v.n |= needByName[id.Value]
	}
}

// program is a compiled expression and the env fields it needs.
type program struct {
	p      *vm.Program
	needs  needs
	native nativeFn // nil: run on the VM (see compileNative)
}

var vmPool = sync.Pool{New: func() any { return new(vm.VM) }}

func (p *program) run(e *env) (any, error) {
	if p.native != nil {
		return p.native(e)
	}
	return p.runVM(e)
}

func (p *program) runVM(e *env) (any, error) {
	v := vmPool.Get().(*vm.VM)
	out, err := v.Run(p.p, e)
	vmPool.Put(v)
	return out, err
}

// compileExpr compiles src against env. The error carries expr's line and
// column (1-based), shifted by col for expressions inside templates.
func compileExpr(src string, asBool bool, col int) (*program, error) {
	opts := []expr.Option{expr.Env(env{}), expr.MaxNodes(2000)}
	if asBool {
		opts = append(opts, expr.AsBool())
	}
	p, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, exprError(err, col)
	}
	v := &needVisitor{}
	node := p.Node()
	ast.Walk(&node, v)
	prog := &program{p: p, needs: v.n}
	if fn, ok := compileNative(p.Node()); ok {
		prog.native = fn
	}
	return prog, nil
}

// exprError turns expr's error into "line L, column C: message".
func exprError(err error, col int) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		c := fe.Column + 1
		if fe.Line == 1 {
			c += col
		}
		return fmt.Errorf("line %d, column %d: %s", fe.Line, c, fe.Message)
	}
	return err
}

// template is text with {{ expression }} interpolations.
type template struct {
	lits  []string   // len(progs)+1 literal parts around the expressions
	progs []*program // nil entries never occur
	needs needs
}

// compileTemplate parses src. Columns in errors count from the start of src.
func compileTemplate(src string) (*template, error) {
	t := &template{}
	rest, off := src, 0
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			t.lits = append(t.lits, rest)
			break
		}
		j := strings.Index(rest[i+2:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("column %d: {{ without }}", off+i+1)
		}
		body := rest[i+2 : i+2+j]
		if strings.TrimSpace(body) == "" {
			return nil, fmt.Errorf("column %d: empty {{ }}", off+i+1)
		}
		p, err := compileExpr(body, false, off+i+2)
		if err != nil {
			return nil, err
		}
		t.lits = append(t.lits, rest[:i])
		t.progs = append(t.progs, p)
		t.needs |= p.needs
		adv := i + 2 + j + 2
		rest, off = rest[adv:], off+adv
	}
	return t, nil
}

// constant reports whether the template has no expressions.
func (t *template) constant() bool { return len(t.progs) == 0 }

func (t *template) render(e *env) (string, error) {
	if len(t.progs) == 0 {
		return t.lits[0], nil
	}
	var b strings.Builder
	for i, p := range t.progs {
		b.WriteString(t.lits[i])
		v, err := p.run(e)
		if err != nil {
			return "", err
		}
		if err := appendText(&b, v); err != nil {
			return "", err
		}
	}
	b.WriteString(t.lits[len(t.lits)-1])
	return b.String(), nil
}

// appendText writes v as text: strings and bytes as they are, numbers and
// booleans in their usual form, nil as nothing, anything else as JSON.
func appendText(b *strings.Builder, v any) error {
	switch x := v.(type) {
	case nil:
	case string:
		b.WriteString(x)
	case []byte:
		b.Write(x)
	case int:
		b.WriteString(strconv.Itoa(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case uint64:
		b.WriteString(strconv.FormatUint(x, 10))
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'f', -1, 64))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case time.Time:
		b.WriteString(x.UTC().Format(time.RFC3339Nano))
	default:
		j, err := encodeJSON(v)
		if err != nil {
			return err
		}
		b.Write(j)
	}
	return nil
}

// toPayload turns an expression's result into payload bytes: strings and
// bytes as they are, anything else as JSON.
func toPayload(v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		return []byte(x), nil
	case []byte:
		return x, nil
	case json.RawMessage:
		return x, nil
	}
	return encodeJSON(v)
}
