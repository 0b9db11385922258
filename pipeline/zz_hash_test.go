package pipeline

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil/vigil/eval"
)

func TestZZOutputHash(t *testing.T) {
	if os.Getenv("ZZ_HASH") == "" {
		t.Skip()
	}
	h := sha256.New()
	for _, dir := range []string{"nab-dev", "skab"} {
		var data []eval.Series
		var err error
		if dir == "nab-dev" {
			data, err = eval.LoadNAB(filepath.Join("..", "..", "shared", "data", dir))
		} else {
			data, err = eval.LoadSKAB(filepath.Join("..", "..", "shared", "data", dir))
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range data {
			replaySeries(t, Default(), s, func(off *Offline, i int, row eval.Row, buf []byte, res *StepResult) {
				fmt.Fprintf(h, "%v %s %d|", res.Score, res.Incident, len(res.Alerts))
				if k := bytes.Index(buf, []byte(`"ingested_at":"`)); k >= 0 {
					e := k + 15 + bytes.IndexByte(buf[k+15:], '"')
					h.Write(buf[:k])
					h.Write(buf[e:])
				}
			})
		}
	}
	t.Logf("hash %x", h.Sum(nil))
}
