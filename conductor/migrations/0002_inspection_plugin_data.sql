-- What processing made of an inspection report (the hooks' plugin data), shown beside
-- the inventory; NULL until the report has been processed.
ALTER TABLE inspection_data ADD COLUMN plugin_data TEXT;
