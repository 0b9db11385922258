package ml

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"go.uber.org/zap"
)

// TrainOptions are the trainer's knobs (the models section of config.yaml).
type TrainOptions struct {
	// Folds of the cross-validation (blocked by event time).
	Folds int
	// AlertRate is the share of readings the threshold lets through when
	// there are no labels to calibrate on.
	AlertRate float64
	// SupervisedRows caps the labelled rows the random forest and the
	// neural net train on (golearn's ID3 and MLP are slow).
	SupervisedRows int
	// MinLabelled is how many labelled rows of each class the supervised
	// models need; below it only the isolation forest is trained.
	MinLabelled int
	Log         *zap.Logger
}

// FoldMetrics is one fold of one candidate.
type FoldMetrics struct {
	Fold      int     `json:"fold"`
	TrainRows int     `json:"train_rows"`
	TestRows  int     `json:"test_rows"`
	Threshold float64 `json:"threshold"`
	AlertRate float64 `json:"alert_rate"`
	Precision float64 `json:"precision,omitzero"`
	Recall    float64 `json:"recall,omitzero"`
	F1        float64 `json:"f1,omitzero"`
}

// Candidate is one model family with one set of hyperparameters.
type Candidate struct {
	Model   string         `json:"model"`
	Params  map[string]int `json:"params"`
	Folds   []FoldMetrics  `json:"folds"`
	MeanF1  float64        `json:"mean_f1,omitzero"`
	MeanErr float64        `json:"mean_rate_error,omitzero"` // |held-out alert rate - target|, unlabelled
	Deploy  bool           `json:"deployable"`
	Seconds float64        `json:"seconds"`
}

// Result is a finished training run.
type Result struct {
	Forest      *Forest
	Winner      Candidate
	Candidates  []Candidate
	Threshold   float64 // on the forest's raw score
	Calibration string  // "best_f1" or "alert_rate"
	Supervised  bool
}

// Train runs the hyperparameter search with blocked k-fold cross-validation
// and refits the winner on all rows. Every candidate's fold metrics are kept.
//
// With enough labels, the search covers the isolation forest, golearn's
// random forest and its MultiLayerNet; each fold's threshold is chosen for
// the best F1 on the training folds and measured on the held-out fold, and
// the winner is the deployable candidate with the best mean held-out F1.
// The MLP is measured for comparison but not deployed: only tree models
// compile to the hot path. Without labels, only the isolation forest is
// trained, the threshold is the (1 - AlertRate) quantile of the training
// folds' scores, and the winner is the candidate whose held-out alert rate
// is closest to AlertRate.
func Train(ctx context.Context, ds *Dataset, o TrainOptions) (*Result, error) {
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	if o.Folds < 2 {
		o.Folds = 2
	}
	n := len(ds.X)
	if n < o.Folds*20 {
		return nil, fmt.Errorf("%d rows is too few to train with %d folds (need %d)", n, o.Folds, o.Folds*20)
	}
	names := ds.Features.Names()
	cols := varyingCols(ds.X)
	if len(cols) == 0 {
		return nil, fmt.Errorf("every feature is constant over the %d training rows", n)
	}
	var labIdx []int
	var normals, anomalies int
	for i, l := range ds.Label {
		if l >= 0 {
			labIdx = append(labIdx, i)
			if l == 1 {
				anomalies++
			} else {
				normals++
			}
		}
	}
	supervised := anomalies >= o.MinLabelled && normals >= o.MinLabelled
	res := &Result{Supervised: supervised}
	if supervised {
		res.Calibration = "best_f1"
	} else {
		res.Calibration = "alert_rate"
	}
	labels := func(idx []int) []bool {
		out := make([]bool, len(idx))
		for i, j := range idx {
			out[i] = ds.Label[j] == 1
		}
		return out
	}
	rowsOf := func(idx []int) [][]float64 {
		out := make([][]float64, len(idx))
		for i, j := range idx {
			out[i] = ds.X[j]
		}
		return out
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	supIdx := thin(labIdx, o.SupervisedRows)

	type family struct {
		model  string
		params []map[string]int
		rows   []int
		deploy bool
	}
	fams := []family{{"iforest", []map[string]int{
		{"trees": 100, "subsample": 256}, {"trees": 100, "subsample": 512}, {"trees": 200, "subsample": 256},
	}, all, true}}
	if supervised {
		// the isolation forest is judged on labelled rows too
		fams[0].rows = labIdx
		fams = append(fams,
			family{"randomforest", []map[string]int{{"trees": 15, "features": 4}, {"trees": 31, "features": 8}}, supIdx, true},
			// golearn's MLP trains row by row through gonum matrices: it gets a
			// third of the rows and fewer passes, or it alone takes minutes
			family{"mlp", []map[string]int{{"hidden": 8, "iterations": 100}, {"hidden": 16, "iterations": 100}}, thin(supIdx, max(o.SupervisedRows/3, 100)), false})
	}
	for _, fam := range fams {
		for _, p := range fam.params {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			start := time.Now()
			c := Candidate{Model: fam.model, Params: p, Deploy: fam.deploy}
			for k := 0; k < o.Folds; k++ {
				trainIdx, testIdx := blockedFold(fam.rows, k, o.Folds)
				fm := FoldMetrics{Fold: k + 1, TrainRows: len(trainIdx), TestRows: len(testIdx)}
				if fam.model == "mlp" {
					bal := balance(trainIdx, ds.Label)
					trainX := standardize(rowsOf(trainIdx), rowsOf(bal), cols)
					net, tmpl := trainMLP(trainX, labels(bal), cols, names, p["hidden"], p["iterations"])
					trainScores := predictScores(net.Predict(gridLike(tmpl, trainX, cols, labels(bal))))
					fm.Threshold = bestF1Threshold(trainScores, labels(bal))
					testScores := predictScores(net.Predict(gridLike(tmpl, standardize(rowsOf(trainIdx), rowsOf(testIdx), cols), cols, labels(testIdx))))
					pred := make([]bool, len(testScores))
					for i, s := range testScores {
						pred[i] = s > fm.Threshold
					}
					fm.Precision, fm.Recall, fm.F1, fm.AlertRate = prf(pred, labels(testIdx))
				} else {
					f, err := fit(fam.model, p, rowsOf(trainIdx), labels(trainIdx), cols, names)
					if err != nil {
						return nil, err
					}
					trainScores, testScores := scores(f, rowsOf(trainIdx)), scores(f, rowsOf(testIdx))
					if supervised {
						fm.Threshold = bestF1Threshold(trainScores, labels(trainIdx))
					} else {
						fm.Threshold = quantile(trainScores, 1-o.AlertRate)
					}
					pred := make([]bool, len(testScores))
					for i, s := range testScores {
						pred[i] = s > fm.Threshold
					}
					if supervised {
						fm.Precision, fm.Recall, fm.F1, fm.AlertRate = prf(pred, labels(testIdx))
					} else {
						fm.AlertRate = rate(pred)
					}
				}
				c.Folds = append(c.Folds, fm)
				c.MeanF1 += fm.F1 / float64(o.Folds)
				c.MeanErr += math.Abs(fm.AlertRate-o.AlertRate) / float64(o.Folds)
			}
			c.Seconds = time.Since(start).Seconds()
			if !supervised {
				c.MeanF1 = 0
			}
			log.Info("cross-validated", zap.String("model", c.Model), zap.Any("params", c.Params),
				zap.Float64("mean_f1", c.MeanF1), zap.Float64("mean_rate_error", c.MeanErr), zap.Float64("seconds", c.Seconds))
			res.Candidates = append(res.Candidates, c)
		}
	}
	best := -1
	for i, c := range res.Candidates {
		if !c.Deploy {
			continue
		}
		if best < 0 || supervised && c.MeanF1 > res.Candidates[best].MeanF1 || !supervised && c.MeanErr < res.Candidates[best].MeanErr {
			best = i
		}
	}
	res.Winner = res.Candidates[best]
	rows := all
	if res.Winner.Model == "randomforest" {
		rows = supIdx
	}
	f, err := fit(res.Winner.Model, res.Winner.Params, rowsOf(rows), labels(rows), cols, names)
	if err != nil {
		return nil, err
	}
	res.Forest = f
	if supervised {
		res.Threshold = bestF1Threshold(scores(f, rowsOf(labIdx)), labels(labIdx))
	} else {
		res.Threshold = quantile(scores(f, rowsOf(all)), 1-o.AlertRate)
	}
	return res, nil
}

func fit(model string, p map[string]int, x [][]float64, y []bool, cols []int, names []string) (*Forest, error) {
	switch model {
	case "iforest":
		_, f, err := trainIsolation(x, cols, names, p["trees"], p["subsample"])
		return f, err
	case "randomforest":
		_, f, err := trainRandom(x, y, cols, names, p["trees"], p["features"])
		return f, err
	}
	return nil, fmt.Errorf("unknown model %q", model)
}

func scores(f *Forest, x [][]float64) []float64 {
	out := make([]float64, len(x))
	for i, r := range x {
		out[i] = f.Score(r)
	}
	return out
}

// varyingCols lists the columns that are not constant over x.
func varyingCols(x [][]float64) []int {
	var out []int
	for c := range x[0] {
		for _, r := range x[1:] {
			if r[c] != x[0][c] {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// standardize returns rows of x scaled by the mean and deviation of ref's
// columns (the neural net's sigmoids need inputs of order one).
func standardize(ref, x [][]float64, cols []int) [][]float64 {
	w := len(ref[0])
	mean, sd := make([]float64, w), make([]float64, w)
	for _, c := range cols {
		var s, ss float64
		for _, r := range ref {
			s += r[c]
			ss += r[c] * r[c]
		}
		m := s / float64(len(ref))
		mean[c], sd[c] = m, math.Sqrt(math.Max(ss/float64(len(ref))-m*m, 1e-12))
	}
	out := make([][]float64, len(x))
	for i, r := range x {
		o := make([]float64, w)
		for _, c := range cols {
			o[c] = (r[c] - mean[c]) / sd[c]
		}
		out[i] = o
	}
	return out
}

// balance repeats the rarer class's rows until both classes are about as
// many: golearn's MultiLayerNet, trained on 4% anomalies, learns to say
// "normal" always.
func balance(idx []int, label []int8) []int {
	var pos, neg []int
	for _, i := range idx {
		if label[i] == 1 {
			pos = append(pos, i)
		} else {
			neg = append(neg, i)
		}
	}
	if len(pos) == 0 || len(neg) == 0 {
		return idx
	}
	few, many := pos, neg
	if len(few) > len(many) {
		few, many = many, few
	}
	out := append([]int(nil), idx...)
	for k := len(few); k < len(many); k++ {
		out = append(out, few[k%len(few)])
	}
	sort.Ints(out)
	return out
}

// thin keeps at most max of idx, evenly spaced (keeping time order).
func thin(idx []int, max int) []int {
	if max <= 0 || len(idx) <= max {
		return idx
	}
	out := make([]int, max)
	for i := range out {
		out[i] = idx[i*len(idx)/max]
	}
	return out
}

// blockedFold splits rows (in time order) into k contiguous blocks; fold
// i tests on block i and trains on the rest, so a model is never tested on
// the minutes between its training rows.
func blockedFold(rows []int, i, k int) (train, test []int) {
	lo, hi := i*len(rows)/k, (i+1)*len(rows)/k
	train = append(append(make([]int, 0, len(rows)-(hi-lo)), rows[:lo]...), rows[hi:]...)
	return train, rows[lo:hi]
}

func quantile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// bestF1Threshold picks the score threshold (predict s > t) with the best F1.
func bestF1Threshold(s []float64, y []bool) float64 {
	idx := make([]int, len(s))
	pos := 0
	for i := range idx {
		idx[i] = i
		if y[i] {
			pos++
		}
	}
	sort.Slice(idx, func(a, b int) bool { return s[idx[a]] > s[idx[b]] })
	best, bestT, tp := -1.0, math.Inf(1), 0
	for k, i := range idx {
		if y[i] {
			tp++
		}
		if k+1 < len(idx) && s[idx[k+1]] == s[i] {
			continue // thresholds fall between distinct scores
		}
		f1 := 2 * float64(tp) / float64(k+1+pos)
		if f1 > best {
			best = f1
			if k+1 < len(idx) {
				bestT = (s[i] + s[idx[k+1]]) / 2
			} else {
				bestT = s[i] - 1e-9
			}
		}
	}
	return bestT
}

func prf(pred, y []bool) (precision, recall, f1, alertRate float64) {
	var tp, fp, fn, np int
	for i := range pred {
		switch {
		case pred[i] && y[i]:
			tp++
		case pred[i]:
			fp++
		case y[i]:
			fn++
		}
		if pred[i] {
			np++
		}
	}
	if tp+fp > 0 {
		precision = float64(tp) / float64(tp+fp)
	}
	if tp+fn > 0 {
		recall = float64(tp) / float64(tp+fn)
	}
	if precision+recall > 0 {
		f1 = 2 * precision * recall / (precision + recall)
	}
	return precision, recall, f1, float64(np) / float64(max(len(pred), 1))
}

func rate(pred []bool) float64 {
	n := 0
	for _, p := range pred {
		if p {
			n++
		}
	}
	return float64(n) / float64(max(len(pred), 1))
}
