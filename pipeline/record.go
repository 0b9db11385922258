package pipeline

import (
	"github.com/vigil/vigil/contract"
)

// scoredOf fills s, the pipeline's part of the enriched record of o (its
// derived figures; the caller sets the scores), reusing s.Derived.
func scoredOf(s *contract.Scored, o *Observation, region string) {
	d := s.Derived[:0]
	add := func(metric, suffix string, v float64) {
		d = append(d, contract.Derived{Metric: metric, Suffix: suffix, Value: v})
	}
	if o.HasDt {
		add(contract.DtS, "", o.DtS)
		add(contract.DtZ, "", o.DtZ)
	}
	for i := range o.Metrics {
		m := &o.Metrics[i]
		if m.HasPrev {
			add(m.Name, contract.SuffixDelta, m.Delta)
			add(m.Name, contract.SuffixRate, m.Rate)
			add(m.Name, contract.SuffixMean, m.Mean)
			add(m.Name, contract.SuffixStd, m.Std)
		}
		if m.Warm {
			add(m.Name, contract.SuffixZ, m.Z)
			add(m.Name, contract.SuffixVol, m.VolZ)
			add(m.Name, contract.SuffixStuck, m.StuckZ)
		}
	}
	if o.MV.Warm {
		add(contract.Multivariate, "", o.MV.Z)
	}
	*s = contract.Scored{Region: region, Device: o.Device, Derived: d}
}
