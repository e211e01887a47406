/*-------------------------------------------------------------------------
 * s3.h
 *	  A small S3 client: SigV4 through libcurl, single PUT or streaming
 *	  multipart upload with bounded memory, abort on error.
 *
 * An upload is fed with egress_s3_upload_write().  Nothing is visible in
 * the bucket before egress_s3_upload_complete(): a small object is sent
 * with one PUT at that point, a large one as a multipart upload whose
 * parts go out while the caller keeps writing (one part in flight, one
 * filling).  egress_s3_upload_abort() never raises an error; it is what
 * error paths call.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_S3_H
#define EGRESS_S3_H

/* GUCs (defined in s3.c, registered by egress_s3_define_gucs) */
extern char *egress_s3_endpoint;
extern char *egress_s3_region;
extern char *egress_s3_access_key_id;
extern char *egress_s3_secret_access_key;
extern char *egress_s3_session_token;
extern int	egress_s3_part_size_kb;
extern int	egress_s3_max_concurrency;

extern void egress_s3_define_gucs(void);

typedef struct EgressS3Target
{
	char	   *bucket;
	char	   *key;
	char	   *region;			/* NULL: GUC, environment, us-east-1 */
	/* explicit credentials; NULL access_key: GUCs, environment, file */
	char	   *access_key;
	char	   *secret_key;
	char	   *session_token;
	char	   *kms_key;		/* SSE-KMS key id, or NULL */
} EgressS3Target;

typedef struct EgressS3Upload EgressS3Upload;

/* AWS credentials as S3 requests resolve them (also for Kinesis) */
extern void egress_aws_credentials(const char *target, const char *access_key,
								   const char *secret_key, const char *session_token,
								   char **akey, char **skey, char **token);

/* the region used when a call names none */
extern char *egress_s3_default_region(void);

/* splits "s3://bucket/key"; ERROR when malformed */
extern void egress_s3_parse_uri(const char *uri, char **bucket, char **key);

/* resolves region and credentials; ERROR when no credentials are found */
extern EgressS3Upload *egress_s3_upload_begin(const EgressS3Target *target);
extern void egress_s3_upload_write(EgressS3Upload *up, const char *data, size_t len);
/* sends what is buffered; the object appears only at complete */
extern void egress_s3_upload_seal(EgressS3Upload *up);
extern void egress_s3_upload_complete(EgressS3Upload *up);
/*
 * Releases the upload; one not completed is aborted first.  Raises no
 * error and does not check for interrupts: callable from PG_CATCH.
 */
extern void egress_s3_upload_abort(EgressS3Upload *up);
/*
 * Attempts per request (5 by default, with the back-off of net/backoff.h
 * between them).  Callers with a retry loop of their own (the S3 sink:
 * egress_sink_commit_with_retries) set 1: each request is made once, and
 * its error's SQLSTATE says whether it may succeed later
 * (ERRCODE_CONNECTION_FAILURE) or not (ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
 * ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION for AccessDenied,
 * InvalidAccessKeyId and SignatureDoesNotMatch; ERRCODE_UNDEFINED_OBJECT
 * for NoSuchBucket).
 */
extern void egress_s3_upload_set_attempts(EgressS3Upload *up, int max_attempts);
extern uint64 egress_s3_upload_bytes(EgressS3Upload *up);
/*
 * best effort, for objects completed before a later failure: raises
 * nothing; false (and a LOG line) when the object was not deleted
 */
extern bool egress_s3_delete_object(EgressS3Upload *up);

#endif							/* EGRESS_S3_H */
