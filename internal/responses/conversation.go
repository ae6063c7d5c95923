package responses

import "encoding/json"

// ParseMetadata reads a conversation's metadata with the bounds of a
// response's: at most 16 keys of 64 bytes, string values of 512.
func ParseMetadata(raw json.RawMessage) (map[string]string, error) {
	if len(raw) == 0 || isNull(raw) {
		return map[string]string{}, nil
	}
	return parseMetadata(raw)
}
