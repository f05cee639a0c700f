package storage

import "fmt"

// CheckListOptions validates the options of a List call before any I/O:
// the Delimiter must be "" or "/". Prefix and StartAfter are not checked,
// because any string is a legal (possibly empty) range on every driver.
func CheckListOptions(opts ListOptions) error {
	if opts.Delimiter != "" && opts.Delimiter != "/" {
		return fmt.Errorf("%w: Delimiter must be \"\" or \"/\", got %q", ErrInvalidArgument, opts.Delimiter)
	}
	return nil
}

// PageSize is the effective page size for MaxKeys: values <= 0 or above
// MaxListKeys mean MaxListKeys.
func PageSize(maxKeys int) int {
	if maxKeys <= 0 || maxKeys > MaxListKeys {
		return MaxListKeys
	}
	return maxKeys
}
