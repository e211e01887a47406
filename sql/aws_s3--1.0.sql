/* aws_s3--1.0.sql: Amazon RDS's aws_s3 export functions on pg_egress */

\echo Use "CREATE EXTENSION aws_s3 CASCADE" to load this file. \quit

-- RDS installs these as two extensions; here one extension owns both schemas
CREATE SCHEMA aws_commons;
CREATE SCHEMA aws_s3;

CREATE TYPE aws_commons._s3_uri_1 AS (
	bucket text,
	file_path text,
	region text
);

CREATE TYPE aws_commons._aws_credentials_1 AS (
	access_key text,
	secret_key text,
	session_token text
);

CREATE FUNCTION aws_commons.create_s3_uri(
	bucket text,
	file_path text,
	region text)
RETURNS aws_commons._s3_uri_1
LANGUAGE sql IMMUTABLE
AS $$ SELECT ROW(bucket, file_path, region)::aws_commons._s3_uri_1 $$;

CREATE FUNCTION aws_commons.create_aws_credentials(
	access_key text,
	secret_key text,
	session_token text)
RETURNS aws_commons._aws_credentials_1
LANGUAGE sql IMMUTABLE
AS $$ SELECT ROW(access_key, secret_key, session_token)::aws_commons._aws_credentials_1 $$;

-- The worker: egress_export() with S3 region, KMS key and credentials.
CREATE FUNCTION aws_s3._export(
	query text,
	bucket text,
	file_path text,
	region text,
	options text,
	kms_key text,
	access_key text,
	secret_key text,
	session_token text,
	OUT rows_uploaded bigint,
	OUT files_uploaded bigint,
	OUT bytes_uploaded bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'egress_export_s3'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- RDS's two signatures; credentials is this project's addition (default
-- NULL: the server's credentials), so RDS calls run unchanged.
CREATE FUNCTION aws_s3.query_export_to_s3(
	query text,
	s3_info aws_commons._s3_uri_1,
	options text DEFAULT NULL,
	kms_key text DEFAULT NULL,
	credentials aws_commons._aws_credentials_1 DEFAULT NULL,
	OUT rows_uploaded bigint,
	OUT files_uploaded bigint,
	OUT bytes_uploaded bigint)
RETURNS record
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$
	SELECT * FROM aws_s3._export(query, (s3_info).bucket, (s3_info).file_path,
		(s3_info).region, options, kms_key, (credentials).access_key,
		(credentials).secret_key, (credentials).session_token)
$$;

CREATE FUNCTION aws_s3.query_export_to_s3(
	query text,
	bucket text,
	file_path text,
	region text DEFAULT NULL,
	options text DEFAULT NULL,
	kms_key text DEFAULT NULL,
	credentials aws_commons._aws_credentials_1 DEFAULT NULL,
	OUT rows_uploaded bigint,
	OUT files_uploaded bigint,
	OUT bytes_uploaded bigint)
RETURNS record
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$
	SELECT * FROM aws_s3._export(query, bucket, file_path, region, options,
		kms_key, (credentials).access_key, (credentials).secret_key,
		(credentials).session_token)
$$;

-- Exports use the server's credentials: granted explicitly, by role, as on RDS
REVOKE ALL ON FUNCTION aws_s3._export(text, text, text, text, text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION aws_s3.query_export_to_s3(text, aws_commons._s3_uri_1, text, text, aws_commons._aws_credentials_1) FROM PUBLIC;
REVOKE ALL ON FUNCTION aws_s3.query_export_to_s3(text, text, text, text, text, text, aws_commons._aws_credentials_1) FROM PUBLIC;
