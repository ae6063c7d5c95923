package httpapi

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestOpenAPIDescriptionHasNoTags keeps angle brackets out of the
// document's description: Swagger UI renders it as Markdown, where
// "<message>" is taken for an HTML tag and disappears from /docs.
func TestOpenAPIDescriptionHasNoTags(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	r := a.do("GET", "/openapi.json", "", nil)
	var doc struct {
		Info struct {
			Description string `json:"description"`
		} `json:"info"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil || doc.Info.Description == "" {
		t.Fatalf("no description in /openapi.json (%v): %.300s", err, r.body)
	}
	if strings.ContainsAny(doc.Info.Description, "<>") {
		t.Errorf("description has angle brackets, which /docs swallows: %s", doc.Info.Description)
	}
	if !strings.Contains(doc.Info.Description, `"path"`) {
		t.Errorf("description no longer says what an error body holds: %s", doc.Info.Description)
	}
}
