package s3store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"fhirbucket/storage"
)

// mapError turns an SDK error into one wrapping the matching storage
// sentinel, keeping the original error in the chain (errors.As still finds
// the smithy.APIError). head says the request was a HEAD, whose 404 carries
// no body and hence no error code.
//
// The SDK has already retried what is retryable (throttling, 5xx,
// connection errors, 409 ConditionalRequestConflict) by the time an error
// reaches here, so what is left is final.
func mapError(ctx context.Context, err error, head bool) error {
	if err == nil {
		return nil
	}
	// Cancellation first: a request cut short by the caller is not a store
	// failure, and the caller tests for its own ctx error.
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(err, ctxErr) {
			return err
		}
		return fmt.Errorf("%w: %w", ctxErr, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}

	code := ""
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	status := 0
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}

	var sentinel error
	switch {
	case code == "NoSuchBucket":
		sentinel = storage.ErrBucketNotFound
	case code == "NoSuchKey" || (head && status == http.StatusNotFound):
		sentinel = storage.ErrNotExist
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		sentinel = storage.ErrPreconditionFailed
	case code == "ConditionalRequestConflict" || status == http.StatusConflict:
		sentinel = storage.ErrConflict
	case code == "AccessDenied" || status == http.StatusForbidden:
		sentinel = storage.ErrAccessDenied
	case status == http.StatusNotFound:
		// A 404 with an unexpected code (some servers answer NotFound or
		// nothing for a missing key on GET as well).
		sentinel = storage.ErrNotExist
	case status == http.StatusTooManyRequests || status >= 500 || isThrottle(code):
		sentinel = storage.ErrUnavailable
	case status == 0 && isTransport(err):
		sentinel = storage.ErrUnavailable
	}
	if sentinel == nil {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

func isThrottle(code string) bool {
	_, ok := retry.DefaultThrottleErrorCodes[code]
	return ok
}

// isTransport reports whether err is a failure to exchange a request with
// the server at all (connection refused, DNS, reset, timeout, retry budget
// used up on such errors).
func isTransport(err error) bool {
	var sendErr *smithyhttp.RequestSendError
	var netErr net.Error
	var maxErr *retry.MaxAttemptsError
	var canceled *aws.RequestCanceledError
	switch {
	case errors.As(err, &canceled):
		return false
	case errors.As(err, &sendErr), errors.As(err, &netErr):
		return true
	case errors.As(err, &maxErr):
		return true
	}
	return false
}
