package main

import (
	"bytes"
	"context"
	"fmt"
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
	total := lines[len(lines)-1]
	t.Log(total)
	// issue 5's bar: above the published F1 and below the published FAR and
	// MAR of the best SKAB outlier detector (Conv-AE, 0.78 / 13.55 / 28.02)
	var f1, far, mar float64
	if _, err := fmt.Sscanf(total, "TOTAL  F1 %f  FAR %f%%  MAR %f%%", &f1, &far, &mar); err != nil {
		t.Fatalf("cannot read %q: %v", total, err)
	}
	if f1 <= 0.78 || far >= 13.55 || mar >= 28.02 {
		t.Errorf("SKAB with the defaults: F1 %.3f FAR %.2f%% MAR %.2f%%; want F1 > 0.78, FAR < 13.55%%, MAR < 28.02%%", f1, far, mar)
	}
}
