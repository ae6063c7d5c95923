package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/agentapi/agentapi/internal/catalog"
)

// modelCatalogue is the live model catalogue the admin API reads and
// changes (catalog.Live).
type modelCatalogue interface {
	Current() *catalog.Catalog
	Put(m catalog.Model) (*catalog.Catalog, error)
	Delete(name string) error
}

// errNoCatalogue answers the admin model routes of a deployment without
// MODELS_FILE.
var errNoCatalogue = errStatus(http.StatusNotFound, "No model catalogue is configured (set MODELS_FILE)")

// catalogueError maps a refused catalogue change: an invalid model is the
// admin's to fix (422 naming every problem), an unknown one is 404.
func catalogueError(err error) error {
	switch {
	case errors.Is(err, catalog.ErrInvalid):
		return errStatus(http.StatusUnprocessableEntity, strings.TrimPrefix(err.Error(), "catalog: "))
	case errors.Is(err, catalog.ErrUnknownModel):
		return errStatus(http.StatusNotFound, "No such model in the catalogue")
	}
	return err
}

// handleAdminListModels is GET /admin/models: the catalogue in use, with
// references to keys and never the keys.
func handleAdminListModels(logger *slog.Logger, cat modelCatalogue) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cat == nil {
			writeError(w, r, logger, errNoCatalogue)
			return
		}
		writeJSON(w, http.StatusOK, cat.Current())
	})
}

// handleAdminPutModel is PUT /admin/models/{name}: add or replace one
// model. The whole catalogue is checked again, written to MODELS_FILE and
// used from the next call on, here at once and on other replicas reading
// the same file at their next poll.
func handleAdminPutModel(logger *slog.Logger, cat modelCatalogue) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cat == nil {
			writeError(w, r, logger, errNoCatalogue)
			return
		}
		var m catalog.Model
		if err := decodeJSON(r, &m); err != nil {
			writeError(w, r, logger, err)
			return
		}
		m.Name = r.PathValue("name")
		next, err := cat.Put(m)
		if err != nil {
			writeError(w, r, logger, catalogueError(err))
			return
		}
		saved, _ := next.Model(m.Name)
		logger.LogAttrs(r.Context(), slog.LevelInfo, "model catalogue changed", slog.String("request_id", requestID(r.Context())),
			slog.String("model", m.Name), slog.String("by", principalFrom(r.Context()).UserID))
		writeJSON(w, http.StatusOK, saved)
	})
}

// handleAdminDeleteModel is DELETE /admin/models/{name}.
func handleAdminDeleteModel(logger *slog.Logger, cat modelCatalogue) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cat == nil {
			writeError(w, r, logger, errNoCatalogue)
			return
		}
		name := r.PathValue("name")
		if err := cat.Delete(name); err != nil {
			writeError(w, r, logger, catalogueError(err))
			return
		}
		logger.LogAttrs(r.Context(), slog.LevelInfo, "model catalogue changed", slog.String("request_id", requestID(r.Context())),
			slog.String("model", name), slog.String("by", principalFrom(r.Context()).UserID), slog.Bool("deleted", true))
		w.WriteHeader(http.StatusNoContent)
	})
}

// modelsOperations documents the catalogue's admin routes.
func modelsOperations() []operation {
	return []operation{
		{Method: "GET", Path: "/admin/models", Tag: "admin", Auth: true, Summary: "The model catalogue in use",
			Description: "Models, their deployments (key references, never keys), tiers, prices and fallbacks. 404 without MODELS_FILE.",
			Responses:   []docResponse{{Status: 200, Description: "The catalogue.", Body: catalog.Catalog{}}, docUnauthorized, docForbidden, docNotFound}},
		{Method: "PUT", Path: "/admin/models/{name}", Tag: "admin", Auth: true, Summary: "Add or replace a catalogue model",
			Description: "Checked with the whole catalogue, written to MODELS_FILE, used at once (other replicas reading the file at their next poll). api_key_env must end in _API_KEY; api_key_file only as the file already names it.",
			Request:     catalog.Model{},
			Responses: []docResponse{{Status: 200, Description: "The model as saved.", Body: catalog.Model{}}, docMalformed, docUnauthorized, docForbidden, docNotFound,
				{Status: 422, Description: "The catalogue would be invalid; the message names every problem.", Body: errorBody{}}}},
		{Method: "DELETE", Path: "/admin/models/{name}", Tag: "admin", Auth: true, Summary: "Remove a catalogue model",
			Responses: []docResponse{{Status: 204, Description: "Removed."}, docUnauthorized, docForbidden, docNotFound,
				{Status: 422, Description: "Another model falls back on it, or it is the default model.", Body: errorBody{}}}},
	}
}
