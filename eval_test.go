package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// `vigil eval` replays the whole SKAB set through a Vigil it starts in
// this process and prints a line per file and a total.
func TestEvalSKAB(t *testing.T) {
	if testing.Short() {
		t.Skip("replays 37,000 readings")
	}
	var out, errb bytes.Buffer
	dir := filepath.Join("..", "shared", "data", "skab")
	if err := run(context.Background(), []string{"eval", "--data", dir}, nil, &out, &errb); err != nil {
		t.Fatalf("eval: %v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1+34+1 || !strings.HasPrefix(lines[len(lines)-1], "TOTAL  F1 ") {
		t.Fatalf("eval output:\n%s", out.String())
	}
	t.Log(lines[len(lines)-1])
}
