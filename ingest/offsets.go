package ingest

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoListEnd returns a function listing the end offsets of topic.
func kgoListEnd(topic string) func(context.Context, *kgo.Client) (map[int32]int64, error) {
	return func(ctx context.Context, cl *kgo.Client) (map[int32]int64, error) {
		ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
		if err != nil {
			return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
		}
		if err := ends.Error(); err != nil {
			return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
		}
		out := map[int32]int64{}
		ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
		return out, nil
	}
}
