// Run once by the mongo image when its data volume is empty (docker-compose.yml mounts it in
// /docker-entrypoint-initdb.d): create the project user, who authenticates against the project
// database itself, so `mongodb://pes:PASSWORD@host:27017/perovskite_pes` works as is.
const dbName = process.env.PES_DATABASE || "perovskite_pes";
const user = process.env.PES_MONGO_USER || "pes";
const pwd = process.env.PES_MONGO_PASSWORD;
if (!pwd) {
  throw new Error("PES_MONGO_PASSWORD is not set");
}
db.getSiblingDB(dbName).createUser({
  user: user,
  pwd: pwd,
  roles: [
    { role: "readWrite", db: dbName },
    { role: "dbAdmin", db: dbName },
  ],
});
