-- The actions workers register, with their human name and description (Ziet's @Action(name=...,
-- description=...)), for `cairn show`, logs and the dashboard.
CREATE TABLE cairn_actions (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    description  text NOT NULL,
    queue        text NOT NULL,
    updated_at   REAL NOT NULL
);
