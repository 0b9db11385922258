package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/storage"
)

// Paragraph is one query of a notebook.
type Paragraph struct {
	Title   string `json:"title,omitzero"`
	SQL     string `json:"sql"`
	Chart   string `json:"chart"`   // table, bar, line, pie, histogram, scatter
	Refresh int    `json:"refresh"` // seconds between re-runs in the report view; 0: never
}

// Notebook is a saved set of paragraphs, stored at contract.NotebookKey in
// the bucket so every region sees it.
type Notebook struct {
	ID         string      `json:"id"`
	Title      string      `json:"title"`
	Paragraphs []Paragraph `json:"paragraphs"`
	UpdatedAt  time.Time   `json:"updated_at"`
}

// NotebookInfo is a notebook in a listing.
type NotebookInfo struct {
	ID        string    `json:"id"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ErrBadNotebook wraps every refusal of a notebook's content or id.
var ErrBadNotebook = errors.New("bad notebook")

// ErrNoNotebook is returned for a notebook that does not exist.
var ErrNoNotebook = errors.New("no such notebook")

var charts = map[string]bool{"table": true, "bar": true, "line": true, "pie": true, "histogram": true, "scatter": true}

func checkID(id string) error {
	if !contract.ValidName(id) {
		return fmt.Errorf("%w: id must be 1-128 letters, digits or ._:-", ErrBadNotebook)
	}
	return nil
}

// SaveNotebook validates nb and stores it as notebook id.
func (c *Console) SaveNotebook(ctx context.Context, id string, nb Notebook) (Notebook, error) {
	if err := checkID(id); err != nil {
		return nb, err
	}
	if len(nb.Paragraphs) > 100 {
		return nb, fmt.Errorf("%w: a notebook holds at most 100 paragraphs", ErrBadNotebook)
	}
	for i, p := range nb.Paragraphs {
		if !charts[p.Chart] {
			return nb, fmt.Errorf("%w: paragraphs[%d].chart %q is not one of table, bar, line, pie, histogram, scatter", ErrBadNotebook, i, p.Chart)
		}
		if p.Refresh < 0 {
			return nb, fmt.Errorf("%w: paragraphs[%d].refresh must not be negative", ErrBadNotebook, i)
		}
	}
	nb.ID, nb.UpdatedAt = id, time.Now().UTC()
	if nb.Title == "" {
		nb.Title = id
	}
	b, _ := json.Marshal(nb)
	if _, err := c.store.Put(ctx, contract.NotebookKey(id), bytes.NewReader(b), int64(len(b))); err != nil {
		return nb, fmt.Errorf("store notebook %s: %w", id, err)
	}
	return nb, nil
}

// Notebook reads notebook id.
func (c *Console) Notebook(ctx context.Context, id string) (Notebook, error) {
	var nb Notebook
	if err := checkID(id); err != nil {
		return nb, err
	}
	rc, _, err := c.store.Get(ctx, contract.NotebookKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nb, fmt.Errorf("%w: %s", ErrNoNotebook, id)
	}
	if err != nil {
		return nb, err
	}
	defer rc.Close()
	if err := json.UnmarshalRead(rc, &nb); err != nil {
		return nb, fmt.Errorf("notebook %s: %w", id, err)
	}
	return nb, nil
}

// Notebooks lists the saved notebooks.
func (c *Console) Notebooks(ctx context.Context) ([]NotebookInfo, error) {
	objs, err := c.store.List(ctx, contract.NotebooksPrefix)
	if err != nil {
		return nil, err
	}
	out := []NotebookInfo{}
	for _, o := range objs {
		if id, ok := contract.NotebookID(o.Key); ok {
			out = append(out, NotebookInfo{ID: id, UpdatedAt: o.Modified.UTC()})
		}
	}
	return out, nil
}

// DeleteNotebook removes notebook id.
func (c *Console) DeleteNotebook(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	return c.store.Delete(ctx, contract.NotebookKey(id))
}
