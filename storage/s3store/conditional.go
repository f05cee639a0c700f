package s3store

import (
	"errors"
	"net"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// conditionalRetries is the per-operation option of a conditional Put
// (If-None-Match or If-Match). It keeps the client's retry policy except
// for one case: an attempt that may have been applied by the server (the
// request was sent but no answer came back, or a 5xx other than
// throttling) is not retried. Retrying it would fail its own precondition
// if the first attempt landed, and report a write that happened as
// ErrPreconditionFailed, which a caller takes for a lost race: fhirstore
// would then store the version a second time, or answer 412 for an update
// that was made (found by internal/jepsen through internal/faultproxy).
// The error is returned instead (ErrUnavailable): the caller knows that
// the outcome is unknown.
func conditionalRetries(o *s3.Options) {
	if r, ok := o.Retryer.(aws.RetryerV2); ok {
		o.Retryer = conditionalRetryer{r}
		return
	}
	// Not expected (the client's retryer is the SDK's standard one): no
	// retries at all is the safe fallback.
	o.Retryer = aws.NopRetryer{}
}

type conditionalRetryer struct{ aws.RetryerV2 }

func (r conditionalRetryer) IsErrorRetryable(err error) bool {
	return r.RetryerV2.IsErrorRetryable(err) && !mayHaveApplied(err)
}

// mayHaveApplied reports whether a failed attempt may nevertheless have
// been carried out by the server.
func mayHaveApplied(err error) bool {
	// A transport failure also comes as a ResponseError, with status 0.
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) && respErr.HTTPStatusCode() > 0 {
		switch s := respErr.HTTPStatusCode(); {
		case s == http.StatusConflict, s == http.StatusTooManyRequests, s == http.StatusServiceUnavailable:
			// 409 ConditionalRequestConflict and throttling (SlowDown,
			// a server still starting) reject the request.
			return false
		case s >= 500:
			return true
		}
		return false
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return false // never sent
	}
	return true
}
