package ml

import (
	"fmt"
	"math"
	"reflect"

	"github.com/sjwhitworth/golearn/base"
	"github.com/sjwhitworth/golearn/ensemble"
	"github.com/sjwhitworth/golearn/neural"
	"github.com/sjwhitworth/golearn/trees"
)

// This file is the glue to golearn: building its instance grids from a
// feature matrix, training its models, and compiling the trained trees into
// Forests. golearn keeps the isolation forest's trees in unexported fields
// with no Save/Load, so compileIsolation reads them by reflection (reading
// unexported fields is allowed; nothing is written). TestCompiledMatches*
// checks the compiled scores against golearn's own Predict.

// Class names of the labelled models.
const (
	classNormal  = "normal"
	classAnomaly = "anomaly"
)

// grid builds a golearn grid of the rows of x (columns cols of each row).
// With labels, the class is categorical (normal/anomaly); without, it is a
// constant float, which golearn's isolation forest requires and ignores.
func grid(x [][]float64, cols []int, names []string, labels []bool) *base.DenseInstances {
	return gridOf(x, cols, names, labels, false)
}

// gridOf is grid; numeric makes the class a float 0/1 (the neural net
// then predicts a score instead of a class, see trainMLP).
func gridOf(x [][]float64, cols []int, names []string, labels []bool, numeric bool) *base.DenseInstances {
	inst := base.NewDenseInstances()
	for _, c := range cols {
		inst.AddAttribute(base.NewFloatAttribute(names[c]))
	}
	var cls base.Attribute
	if labels != nil && !numeric {
		ca := base.NewCategoricalAttribute()
		ca.GetSysValFromString(classNormal)
		ca.GetSysValFromString(classAnomaly)
		cls = ca
	} else {
		cls = base.NewFloatAttribute("class")
	}
	cls.SetName("class")
	inst.AddAttribute(cls)
	if err := inst.AddClassAttribute(cls); err != nil {
		panic(err) // cannot happen: cls was just added
	}
	fill(inst, x, cols, labels)
	return inst
}

// gridLike builds a grid of x with the very Attribute objects of tmpl:
// golearn's neural net finds its inputs by Attribute identity.
func gridLike(tmpl *base.DenseInstances, x [][]float64, cols []int, labels []bool) *base.DenseInstances {
	inst := base.NewStructuralCopy(tmpl)
	fill(inst, x, cols, labels)
	return inst
}

// fill appends the rows of x to inst, whose attributes are cols' features
// in order and then the class.
func fill(inst *base.DenseInstances, x [][]float64, cols []int, labels []bool) {
	attrs := inst.AllAttributes()
	specs := base.ResolveAttributes(inst, attrs)
	cls := attrs[len(attrs)-1]
	cspec := specs[len(specs)-1]
	if err := inst.Extend(len(x)); err != nil {
		panic(err)
	}
	var vNormal, vAnomaly []byte
	if ca, ok := cls.(*base.CategoricalAttribute); ok {
		vNormal, vAnomaly = ca.GetSysValFromString(classNormal), ca.GetSysValFromString(classAnomaly)
	}
	zero, one := base.PackFloatToBytes(0), base.PackFloatToBytes(1)
	if vNormal == nil {
		vNormal, vAnomaly = zero, one
	}
	for r, row := range x {
		for i, c := range cols {
			inst.Set(specs[i], r, base.PackFloatToBytes(row[c]))
		}
		switch {
		case labels == nil:
			inst.Set(cspec, r, zero)
		case labels[r]:
			inst.Set(cspec, r, vAnomaly)
		default:
			inst.Set(cspec, r, vNormal)
		}
	}
}

// trainIsolation fits golearn's isolation forest on x and compiles it.
func trainIsolation(x [][]float64, cols []int, names []string, nTrees, subsample int) (*trees.IsolationForest, *Forest, error) {
	if subsample > len(x) {
		subsample = len(x)
	}
	depth := 1
	for 1<<depth < subsample {
		depth++
	}
	g := grid(x, cols, names, nil)
	f := trees.NewIsolationForest(nTrees, depth, subsample)
	f.Fit(g)
	c, err := compileIsolation(&f, cols, len(names))
	return &f, c, err
}

// cFactor is golearn's path-length correction c(n).
func cFactor(n int) float64 {
	return 2.0*(math.Log(float64(n-1))+0.5772156649) - (float64(2.0*(n-1)) / float64(n))
}

// compileIsolation flattens golearn's isolation trees. Its feature k is
// column cols[k] of the vector; feature len(cols) is the constant class
// column golearn appends, which it can never split on.
func compileIsolation(f *trees.IsolationForest, cols []int, nFeat int) (*Forest, error) {
	v := reflect.ValueOf(f).Elem()
	ts := v.FieldByName("trees")
	sub := v.FieldByName("subSpace")
	if !ts.IsValid() || !sub.IsValid() || ts.Kind() != reflect.Slice {
		return nil, fmt.Errorf("golearn's IsolationForest has changed shape: cannot compile it")
	}
	out := &Forest{Kind: KindIsolation, NFeat: nFeat, Norm: cFactor(int(sub.Int()))}
	leafValue := func(pred float64) float64 {
		if pred <= 1 {
			return 0
		}
		return cFactor(int(pred))
	}
	// place writes golearn node n into slot, its children into a pair of
	// fresh adjacent slots (Right = Left + 1), and so on down.
	var place func(slot int32, n reflect.Value) error
	place = func(slot int32, n reflect.Value) error {
		feat := int(n.FieldByName("Feature").Int())
		if feat >= len(cols) {
			return fmt.Errorf("isolation tree splits on golearn column %d of %d", feat, len(cols))
		}
		kids := out.reserve(2)
		out.Node[slot] = Node{Feat: int32(cols[feat]), Thr: n.FieldByName("Threshold").Float(), Left: kids, Right: kids + 1}
		for side, name := range []string{"Left", "Right"} {
			child := n.FieldByName(name)
			if child.IsNil() {
				out.Node[kids+int32(side)] = Node{Feat: -1, Thr: leafValue(n.FieldByName(name + "Pred").Float()), Left: -1, Right: -1}
			} else if err := place(kids+int32(side), child.Elem()); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < ts.Len(); i++ {
		root := out.reserve(1)
		if err := place(root, ts.Index(i)); err != nil {
			return nil, err
		}
		out.Roots = append(out.Roots, root)
	}
	return out, out.check()
}

// trainRandom fits golearn's random forest on labelled rows and compiles it.
func trainRandom(x [][]float64, labels []bool, cols []int, names []string, nTrees, features int) (*ensemble.RandomForest, *Forest, error) {
	if features > len(cols) {
		features = len(cols)
	}
	g := grid(x, cols, names, labels)
	rf := ensemble.NewRandomForest(nTrees, features)
	if err := rf.Fit(g); err != nil {
		return nil, nil, fmt.Errorf("random forest: %w", err)
	}
	c, err := compileRandom(rf, names)
	return rf, c, err
}

// compileRandom flattens the ID3 trees of a golearn random forest. A
// numeric split sends x > SplitVal to child "1" and the rest to "0"; when
// one of them is missing golearn falls back to the other, as here.
func compileRandom(rf *ensemble.RandomForest, names []string) (*Forest, error) {
	index := make(map[string]int, len(names))
	for i, n := range names {
		index[n] = i
	}
	out := &Forest{Kind: KindRandom, NFeat: len(names)}
	var place func(slot int32, n *trees.DecisionTreeNode) error
	place = func(slot int32, n *trees.DecisionTreeNode) error {
		if n.Children == nil || n.SplitRule == nil || n.SplitRule.SplitAttr == nil {
			v := 0.0
			if n.Class == classAnomaly {
				v = 1
			}
			out.Node[slot] = Node{Feat: -1, Thr: v, Left: -1, Right: -1}
			return nil
		}
		if _, ok := n.SplitRule.SplitAttr.(*base.FloatAttribute); !ok {
			return fmt.Errorf("random forest splits on non-numeric attribute %s", n.SplitRule.SplitAttr.GetName())
		}
		feat, ok := index[n.SplitRule.SplitAttr.GetName()]
		if !ok {
			return fmt.Errorf("random forest splits on unknown attribute %s", n.SplitRule.SplitAttr.GetName())
		}
		lo, hi := n.Children["0"], n.Children["1"]
		if lo == nil {
			lo = hi
		}
		if hi == nil {
			hi = lo
		}
		if lo == nil {
			return fmt.Errorf("random forest node on %s has %d children, none of them 0 or 1", names[feat], len(n.Children))
		}
		kids := out.reserve(2)
		out.Node[slot] = Node{Feat: int32(feat), Thr: n.SplitRule.SplitVal, Left: kids, Right: kids + 1}
		if err := place(kids, lo); err != nil {
			return err
		}
		return place(kids+1, hi)
	}
	for _, m := range rf.Model.Models {
		t, ok := m.(*trees.ID3DecisionTree)
		if !ok || t.Root == nil {
			return nil, fmt.Errorf("random forest member is %T, not a trained ID3 tree", m)
		}
		root := out.reserve(1)
		if err := place(root, t.Root); err != nil {
			return nil, err
		}
		out.Roots = append(out.Roots, root)
	}
	return out, out.check()
}

// trainMLP fits golearn's MultiLayerNet on labelled rows; it returns the
// training grid too, the template of the grids it can predict. The class
// is a float 0/1: with a two-valued categorical class golearn builds one
// output node and its Predict then always answers the first class; with a
// float class it returns the output node's activation, a score.
func trainMLP(x [][]float64, labels []bool, cols []int, names []string, hidden, iterations int) (*neural.MultiLayerNet, *base.DenseInstances) {
	g := gridOf(x, cols, names, labels, true)
	net := neural.NewMultiLayerNet([]int{hidden})
	net.MaxIterations = iterations
	net.Fit(g)
	return net, g
}

// predictScores reads the float class of golearn's predictions.
func predictScores(pred base.FixedDataGrid) []float64 {
	_, rows := pred.Size()
	cls := pred.AllClassAttributes()
	spec, err := pred.GetAttribute(cls[0])
	if err != nil {
		panic(err)
	}
	out := make([]float64, rows)
	for i := range out {
		out[i] = base.UnpackBytesToFloat(pred.Get(spec, i))
	}
	return out
}
