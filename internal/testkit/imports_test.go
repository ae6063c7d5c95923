package testkit_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOnlyTestsImportTheKit: outside the kit itself, only _test.go files
// and the load harness (a command that runs the same fakes) import
// internal/testkit or its subpackages, so no fake reaches the server.
func TestOnlyTestsImportTheKit(t *testing.T) {
	root := filepath.Join("..", "..")
	allowed := []string{filepath.Join("internal", "testkit") + string(filepath.Separator), filepath.Join("cmd", "loadharness") + string(filepath.Separator)}
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "vendor" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		for _, a := range allowed {
			if strings.HasPrefix(rel, a) {
				return nil
			}
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasSuffix(p, "/internal/testkit") || strings.Contains(p, "/internal/testkit/") {
				t.Errorf("%s imports %s: the test kit is for tests and the load harness only", rel, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d files: is the repository root %s?", checked, root)
	}
}
