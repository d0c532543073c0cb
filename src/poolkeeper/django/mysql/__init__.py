"""MySQL/MariaDB (mysqlclient) backend for Django, pooled by poolkeeper."""
