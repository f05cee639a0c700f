package server_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAuthRegistrationGoesThroughRouteTable reads the server's source:
// the only ServeMux is the one routes builds from the route table, and
// routes is the only place that calls Handle or HandleFunc (wrapping each
// row's handler in guard). Together with the panic for rows without a
// known interaction, no route can be registered without its access rule.
func TestAuthRegistrationGoesThroughRouteTable(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	newMux := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			where := fn.Name.Name
			if fn.Recv != nil && len(fn.Recv.List) == 1 {
				where = types(fn.Recv.List[0].Type) + "." + where
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				switch sel.Sel.Name {
				case "NewServeMux":
					newMux++
					if where != "Server.routes" {
						t.Errorf("%s: %s creates a ServeMux outside routes", fset.Position(call.Pos()), where)
					}
				case "Handle", "HandleFunc":
					if where != "Server.routes" {
						t.Errorf("%s: %s registers a handler outside routes", fset.Position(call.Pos()), where)
					}
				}
				return true
			})
		}
	}
	if newMux != 1 {
		t.Errorf("found %d NewServeMux calls, want exactly 1 (in routes)", newMux)
	}
}

// types names a receiver type without its pointer star.
func types(e ast.Expr) string {
	if s, ok := e.(*ast.StarExpr); ok {
		e = s.X
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return "?"
}

// TestGuaranteesCiteExistingTests keeps docs/guarantees.md honest: every
// test it names as evidence ("folder/file.go: TestName", and the bare
// `TestName`s that follow in the same sentence) is defined in that file.
func TestGuaranteesCiteExistingTests(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "guarantees.md"))
	if err != nil {
		t.Fatal(err)
	}
	cite := regexp.MustCompile("`([\\w/]+\\.go): (Test\\w+)`|`(Test\\w+)`")
	file, n := "", 0
	for _, m := range cite.FindAllStringSubmatch(string(doc), -1) {
		name := m[3]
		if m[1] != "" {
			file, name = m[1], m[2]
		}
		if file == "" {
			t.Errorf("%s is cited before any file", name)
			continue
		}
		src, err := os.ReadFile(filepath.Join("..", file))
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if !strings.Contains(string(src), "func "+name+"(") {
			t.Errorf("docs/guarantees.md cites %s in %s, which does not define it", name, file)
		}
		n++
	}
	if n < 20 {
		t.Errorf("only %d citations found; is the pattern still right?", n)
	}
}
