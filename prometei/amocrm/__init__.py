"""amoCRM: webhook parsing, the REST client, OAuth."""
