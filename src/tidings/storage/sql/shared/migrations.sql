-- name: schema_version
SELECT max(version) FROM tidings_migrations;
