package rules

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm/runtime"
)

// Conditions are mostly comparisons of payload fields with constants
// (json.temp > 30 && json.unit == "C") and transforms mostly arithmetic on
// them, evaluated for every matching rule of every message. For that
// subset of the language (literals, maps and arrays of them, field access,
// comparisons, arithmetic, &&, ||, !, ??), compileNative turns
// the checked syntax tree into Go closures: they call the same runtime
// functions as expr's VM (runtime.Equal, runtime.Less, runtime.Fetch...),
// so the results and failures are the VM's, but they skip the VM's stack
// and fetch payload fields from map[string]any directly instead of through
// reflection, which is several times faster. Anything outside the subset
// runs on the VM. FuzzNative holds the two to the same answers.

type nativeFn func(e *env) (any, error)

// errChainNil ends an optional chain (json?.a.b) early: the ChainNode
// around it turns it into nil, as the VM's jump to the chain's end does.
var errChainNil = errors.New("optional chain: nil")

// compileNative returns the closure for node, or false when node uses
// something outside the subset.
func compileNative(node ast.Node) (nativeFn, bool) {
	fn, ok := nativeNode(node, false)
	if !ok {
		return nil, false
	}
	return func(e *env) (v any, err error) {
		defer func() {
			if r := recover(); r != nil {
				v, err = nil, fmt.Errorf("%v", r)
			}
		}()
		return fn(e)
	}, true
}

func nativeNode(node ast.Node, inChain bool) (nativeFn, bool) {
	switch n := node.(type) {
	case *ast.NilNode:
		return func(*env) (any, error) { return nil, nil }, true
	case *ast.BoolNode:
		return constant(n.Value), true
	case *ast.StringNode:
		return constant(n.Value), true
	case *ast.FloatNode:
		if n.Type() != nil && n.Type().Kind() != reflect.Float64 {
			return nil, false
		}
		return constant(n.Value), true
	case *ast.IntegerNode:
		switch t := n.Type(); {
		case t == nil || t.Kind() == reflect.Int:
			return constant(n.Value), true
		case t.Kind() == reflect.Float64:
			return constant(float64(n.Value)), true
		case t.Kind() == reflect.Int64:
			return constant(int64(n.Value)), true
		}
		return nil, false
	case *ast.ConstantNode:
		return constant(n.Value), true
	case *ast.IdentifierNode:
		return nativeIdent(n.Value)
	case *ast.ChainNode:
		inner, ok := nativeNode(n.Node, true)
		if !ok {
			return nil, false
		}
		return func(e *env) (any, error) {
			v, err := inner(e)
			if err == errChainNil || (err == nil && runtime.IsNil(v)) {
				return nil, nil
			}
			return v, err
		}, true
	case *ast.MemberNode:
		return nativeMember(n, inChain)
	case *ast.UnaryNode:
		x, ok := nativeNode(n.Node, inChain)
		if !ok {
			return nil, false
		}
		switch n.Operator {
		case "!", "not":
			return func(e *env) (any, error) {
				v, err := x(e)
				if err != nil {
					return nil, err
				}
				b, ok := v.(bool)
				if !ok {
					return nil, notBool(n.Operator, v)
				}
				return !b, nil
			}, true
		case "-":
			return func(e *env) (any, error) {
				v, err := x(e)
				if err != nil {
					return nil, err
				}
				return runtime.Negate(v), nil
			}, true
		case "+":
			return x, true
		}
		return nil, false
	case *ast.BinaryNode:
		return nativeBinary(n, inChain)
	case *ast.ArrayNode:
		elems := make([]nativeFn, len(n.Nodes))
		for i, el := range n.Nodes {
			f, ok := nativeNode(el, inChain)
			if !ok {
				return nil, false
			}
			elems[i] = f
		}
		return func(e *env) (any, error) {
			out := make([]any, len(elems))
			for i, f := range elems {
				v, err := f(e)
				if err != nil {
					return nil, err
				}
				out[i] = v
			}
			return out, nil
		}, true
	case *ast.MapNode:
		keys := make([]nativeFn, len(n.Pairs))
		vals := make([]nativeFn, len(n.Pairs))
		for i, p := range n.Pairs {
			pair, ok := p.(*ast.PairNode)
			if !ok {
				return nil, false
			}
			k, ok1 := nativeNode(pair.Key, inChain)
			v, ok2 := nativeNode(pair.Value, inChain)
			if !ok1 || !ok2 {
				return nil, false
			}
			keys[i], vals[i] = k, v
		}
		return func(e *env) (any, error) {
			out := make(map[string]any, len(keys))
			for i := range keys {
				// The VM evaluates every key and value first, then fills
				// the map from the last pair back: a repeated key keeps
				// its first value.
				k, err := keys[i](e)
				if err != nil {
					return nil, err
				}
				v, err := vals[i](e)
				if err != nil {
					return nil, err
				}
				ks, ok := k.(string)
				if !ok {
					return nil, fmt.Errorf("interface conversion: map key is %T, not string", k)
				}
				if _, dup := out[ks]; !dup {
					out[ks] = v
				}
			}
			return out, nil
		}, true
	}
	return nil, false
}

func constant(v any) nativeFn { return func(*env) (any, error) { return v, nil } }

func notBool(op string, v any) error {
	return fmt.Errorf("invalid operation: %s needs a bool, got %T", op, v)
}

func nativeIdent(name string) (nativeFn, bool) {
	switch name {
	case "json":
		return func(e *env) (any, error) { return e.JSON, nil }, true
	case "topic":
		return func(e *env) (any, error) { return e.Topic, nil }, true
	case "payload":
		return func(e *env) (any, error) { return e.Payload, nil }, true
	case "qos":
		return func(e *env) (any, error) { return e.QoS, nil }, true
	case "retain":
		return func(e *env) (any, error) { return e.Retain, nil }, true
	case "client_id":
		return func(e *env) (any, error) { return e.ClientID, nil }, true
	case "username":
		return func(e *env) (any, error) { return e.Username, nil }, true
	case "index":
		return func(e *env) (any, error) { return e.Index, nil }, true
	case "levels":
		return func(e *env) (any, error) { return e.Levels, nil }, true
	case "properties":
		return func(e *env) (any, error) { return e.Properties, nil }, true
	}
	return nil, false
}

// nativeMember fetches a constant key or index, straight from the maps
// and slices decoded payloads are made of; anything else through
// runtime.Fetch like the VM.
func nativeMember(n *ast.MemberNode, inChain bool) (nativeFn, bool) {
	if n.Method {
		return nil, false
	}
	base, ok := nativeNode(n.Node, inChain)
	if !ok {
		return nil, false
	}
	var key any
	switch p := n.Property.(type) {
	case *ast.StringNode:
		key = p.Value
	case *ast.IntegerNode:
		if t := p.Type(); t != nil && t.Kind() != reflect.Int {
			return nil, false
		}
		key = p.Value
	default:
		return nil, false
	}
	optional := n.Optional && inChain
	skey, isString := key.(string)
	return func(e *env) (any, error) {
		v, err := base(e)
		if err != nil {
			return nil, err
		}
		if optional && runtime.IsNil(v) {
			return nil, errChainNil
		}
		if m, ok := v.(map[string]any); ok && isString {
			return m[skey], nil
		}
		return runtime.Fetch(v, key), nil // panics like the VM's OpFetch
	}, true
}

func nativeBinary(n *ast.BinaryNode, inChain bool) (nativeFn, bool) {
	l, ok := nativeNode(n.Left, inChain)
	if !ok {
		return nil, false
	}
	r, ok := nativeNode(n.Right, inChain)
	if !ok {
		return nil, false
	}
	var cmp func(a, b any) bool
	switch n.Operator {
	case "&&", "and", "||", "or":
		and := n.Operator == "&&" || n.Operator == "and"
		return func(e *env) (any, error) {
			a, err := l(e)
			if err != nil {
				return nil, err
			}
			b, ok := a.(bool)
			if !ok {
				return nil, notBool(n.Operator, a)
			}
			if b != and {
				return b, nil // short circuit: the left value is the result
			}
			return r(e)
		}, true
	case "??":
		return func(e *env) (any, error) {
			a, err := l(e)
			if err != nil {
				return nil, err
			}
			if !runtime.IsNil(a) {
				return a, nil
			}
			return r(e)
		}, true
	case "+", "-", "*", "/", "%", "**", "^":
		var op func(a, b any) any
		switch n.Operator {
		case "+":
			op = runtime.Add
		case "-":
			op = runtime.Subtract
		case "*":
			op = runtime.Multiply
		case "/":
			op = func(a, b any) any { return runtime.Divide(a, b) }
		case "%":
			op = func(a, b any) any { return runtime.Modulo(a, b) }
		default:
			op = func(a, b any) any { return runtime.Exponent(a, b) }
		}
		return func(e *env) (any, error) {
			a, err := l(e)
			if err != nil {
				return nil, err
			}
			b, err := r(e)
			if err != nil {
				return nil, err
			}
			return op(a, b), nil
		}, true
	case "==":
		cmp = runtime.Equal
	case "!=":
		cmp = func(a, b any) bool { return !runtime.Equal(a, b) }
	case "<":
		cmp = runtime.Less
	case ">":
		cmp = runtime.More
	case "<=":
		cmp = runtime.LessOrEqual
	case ">=":
		cmp = runtime.MoreOrEqual
	default:
		return nil, false
	}
	return func(e *env) (any, error) {
		a, err := l(e)
		if err != nil {
			return nil, err
		}
		b, err := r(e)
		if err != nil {
			return nil, err
		}
		return cmp(a, b), nil
	}, true
}
