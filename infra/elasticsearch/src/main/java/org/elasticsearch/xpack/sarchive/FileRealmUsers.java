package org.elasticsearch.xpack.sarchive;

import org.elasticsearch.common.settings.SecureString;
import org.elasticsearch.xpack.core.security.authc.support.Hasher;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * Writes the file realm's {@code users} and {@code users_roles} files (what the elasticsearch-users CLI does) from
 * a spec "name:password:role1,role2;name2:password2:role", hashing passwords with bcrypt.
 */
public final class FileRealmUsers {

    private FileRealmUsers() {}

    public static void write(Path configDir, String spec) throws IOException {
        List<String> users = new ArrayList<>();
        Map<String, TreeSet<String>> roles = new LinkedHashMap<>();
        for (String entry : spec.split(";")) {
            entry = entry.trim();
            if (entry.isEmpty()) continue;
            String[] parts = entry.split(":", 3);
            if (parts.length < 2) throw new IllegalArgumentException("bad user spec (name:password[:roles]): " + entry);
            char[] hash = Hasher.BCRYPT.hash(new SecureString(parts[1].toCharArray()));
            users.add(parts[0] + ":" + new String(hash));
            if (parts.length == 3) {
                for (String role : parts[2].split(",")) {
                    if (role.isBlank() == false) roles.computeIfAbsent(role.trim(), r -> new TreeSet<>()).add(parts[0]);
                }
            }
        }
        List<String> roleLines = new ArrayList<>();
        roles.forEach((role, names) -> roleLines.add(role + ":" + String.join(",", names)));
        replace(configDir.resolve("users"), users);
        replace(configDir.resolve("users_roles"), roleLines);
    }

    private static void replace(Path file, List<String> lines) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        Files.write(tmp, lines);
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
